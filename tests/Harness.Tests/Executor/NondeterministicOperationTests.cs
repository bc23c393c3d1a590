using System.Runtime.InteropServices;
using Harness.Executor.Native;

namespace Harness.Tests.Executor;

/// <summary>libtorch's refusal of an operator under deterministic algorithms, as TorchSharp surfaces it (its message and
/// native frames), is one sentence naming the operator; other failures are not taken for it.</summary>
public class NondeterministicOperationTests
{
    [Fact]
    public void LibtorchsRefusalIsOneSentenceNamingTheOperator()
    {
        var refusal = new ExternalException(
            "index_add_cuda_ does not have a deterministic implementation, but you set 'torch.use_deterministic_algorithms(True)'. " +
            "You can turn off determinism just for this operation, or you can use the 'warn_only=True' option, if that's acceptable for your application.\n" +
            "Exception raised from alertNotDeterministic at /pytorch/aten/src/ATen/Context.cpp:95 (most recent call first):\n" +
            "frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x98 (0x7f in libc10.so)");
        Assert.True(NondeterministicOperation.Is(refusal));
        Assert.Equal("--deterministic-mode: libtorch has no deterministic index_add_cuda_ on this device, which this run needs; run it without --deterministic-mode.",
            NondeterministicOperation.Sentence(refusal));
        // Relayed by TorchScript's interpreter (the scripted kernels), the operator follows the exception's type.
        var scripted = new ExternalException("The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n" +
            "RuntimeError: index_add_cuda_ does not have a deterministic implementation, but you set 'torch.use_deterministic_algorithms(True)'.");
        Assert.Equal("--deterministic-mode: libtorch has no deterministic index_add_cuda_ on this device, which this run needs; run it without --deterministic-mode.",
            NondeterministicOperation.Sentence(scripted));
        Assert.False(NondeterministicOperation.Is(new ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB")));
        Assert.False(NondeterministicOperation.Is(new InvalidOperationException("index_add_cuda_ does not have a deterministic implementation")));
    }
}
