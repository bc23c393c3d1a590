using System.Runtime.InteropServices;

namespace Harness.Executor.Native;

/// <summary>
/// libtorch's refusal, under --deterministic-mode, of an operator that has no deterministic version on this device
/// (at::Context::alertNotDeterministic: "&lt;operator&gt; does not have a deterministic implementation, but you set
/// 'torch.use_deterministic_algorithms(True)'...", thrown through TorchSharp as an ExternalException with native frames):
/// the configuration cannot run deterministically, which a run says in one sentence.
/// </summary>
public static class NondeterministicOperation
{
    private const string Marker = " does not have a deterministic implementation";

    public static bool Is(Exception e) => e is ExternalException && e.Message.Contains(Marker, StringComparison.Ordinal);

    /// <summary>The sentence for <paramref name="e"/> (<see cref="Is"/>), naming the operator libtorch named.</summary>
    public static string Sentence(Exception e)
    {
        string message = e.Message;
        // The operator's name starts its line, after the exception type where TorchScript relays the error ("RuntimeError: ").
        string op = message[..message.IndexOf(Marker, StringComparison.Ordinal)].Split('\n')[^1].Split(": ")[^1].Trim();
        return $"--deterministic-mode: libtorch has no deterministic {op} on this device, which this run needs; run it without --deterministic-mode.";
    }
}
