using System.Runtime.InteropServices;

namespace Harness.Cli.Commands;

/// <summary>libtorch's allocation failure as TorchSharp surfaces it (CUDA's "out of memory", or the CPU allocator's):
/// a configuration too big for the device, which `harness run` answers with one sentence, not a stack trace.</summary>
internal static class OutOfMemory
{
    public static bool Is(Exception e) => e is ExternalException && e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase);
}
