using System.Runtime.InteropServices;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>libtorch's allocation failure as TorchSharp surfaces it (CUDA's "out of memory", or the CPU allocator's):
/// a configuration too big for the device, which `harness run` answers with one sentence, not a stack trace.</summary>
internal static class OutOfMemory
{
    public static bool Is(Exception e) => e is ExternalException && e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase);

    /// <summary>The one sentence: what did not fit and what would; <paramref name="rank"/> for a rank of a parallel run.</summary>
    public static string Sentence(ModelSpec model, RunDescription d, int? rank) =>
        $"{(rank is int r ? $"rank {r}: " : "")}micro-batch {d.MicroBatch} x s {model.SeqLength} of {model.Name}{(rank is null ? "" : " in this layout")} " +
        $"does not fit in the device's memory; use a smaller --micro-batch-size{(rank is null ? "" : ", more model parallelism")} or --recompute-granularity full.";
}
