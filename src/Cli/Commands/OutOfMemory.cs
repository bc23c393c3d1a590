using Harness.Executor.Native;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>A configuration too big for the device (libtorch's <see cref="AllocationFailure"/>), which `harness run` answers
/// with one sentence naming what ran out and what would fit, not libtorch's frames.</summary>
public static class OutOfMemory
{
    /// <summary>The one sentence: what did not fit in which memory and what would; <paramref name="rank"/> for a rank of a
    /// parallel run.</summary>
    public static string Sentence(ModelSpec model, RunDescription d, ExecutionDevice device, int? rank) =>
        $"{(rank is int r ? $"rank {r}: " : "")}micro-batch {d.MicroBatch} x s {model.SeqLength} of {model.Name}{(rank is null ? "" : " in this layout")} " +
        $"does not fit in the {(device == ExecutionDevice.Cuda ? "GPU's" : "CPU's")} memory; use a smaller --micro-batch-size or --seq-length" +
        $"{(rank is null ? "" : ", more model parallelism")} or --recompute-granularity full.";
}
