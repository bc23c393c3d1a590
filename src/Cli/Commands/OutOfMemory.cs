using System.Runtime.InteropServices;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>libtorch's allocation failure as TorchSharp surfaces it (an ExternalException carrying libtorch's message and
/// native frames): CUDA's "out of memory", or the CPU allocator's "DefaultCPUAllocator: can't allocate memory" (older
/// libtorch: "not enough memory"). A configuration too big for the device, which `harness run` answers with one sentence
/// naming what ran out and what would fit, not libtorch's frames.</summary>
public static class OutOfMemory
{
    public static bool Is(Exception e) => e is ExternalException &&
        (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase) || e.Message.Contains("DefaultCPUAllocator", StringComparison.Ordinal));

    /// <summary>The one sentence: what did not fit in which memory and what would; <paramref name="rank"/> for a rank of a
    /// parallel run.</summary>
    public static string Sentence(ModelSpec model, RunDescription d, ExecutionDevice device, int? rank) =>
        $"{(rank is int r ? $"rank {r}: " : "")}micro-batch {d.MicroBatch} x s {model.SeqLength} of {model.Name}{(rank is null ? "" : " in this layout")} " +
        $"does not fit in the {(device == ExecutionDevice.Cuda ? "GPU's" : "CPU's")} memory; use a smaller --micro-batch-size or --seq-length" +
        $"{(rank is null ? "" : ", more model parallelism")} or --recompute-granularity full.";
}
