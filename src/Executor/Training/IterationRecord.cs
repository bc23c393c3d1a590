namespace Harness.Executor.Training;

/// <summary>
/// What one iteration measured: one metrics.csv row.
/// ElapsedMs is the iteration's period, from the previous iteration's end to this one's (host time included);
/// HostGapMs is the part of it before the first kernel of this iteration was enqueued (the device idles then);
/// EnqueueMs is how long the host took to enqueue the whole iteration (when it nears ElapsedMs, the loop is
/// launch-bound). Memory is NVML's used bytes on a GPU, the process working set on CPU.
/// </summary>
public sealed record IterationRecord(
    long Iteration,
    double ElapsedMs,
    double TokensPerSecondPerGpu,
    double ModelTflopsPerGpu,
    double? Mfu,
    double Loss,
    double GradNorm,
    double LearningRate,
    long MemoryUsedBytes,
    long MemoryPeakBytes,
    double HostGapMs,
    double EnqueueMs);
