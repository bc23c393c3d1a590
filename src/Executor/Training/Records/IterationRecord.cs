namespace Harness.Executor.Training.Records;

/// <summary>
/// What one iteration measured: one metrics.csv row.
/// ElapsedMs is the iteration's period, from the previous iteration's end to this one's (host time included);
/// HostGapMs is the part of it before the first kernel of this iteration was enqueued (the device idles then);
/// EnqueueMs is how long the host took to enqueue the whole iteration (when it nears ElapsedMs, the loop is
/// launch-bound). Memory is NVML's used bytes on a GPU, the process working set on CPU.
/// In parallel runs (rank 0 writes the row) MemoryPeakBytes is the maximum over ranks and CommunicationMs the
/// time rank 0 spent in communication during the iteration (null for single-device runs).
/// GradNorm is null when the iteration skipped its optimizer step (its gradients overflowed); LossScale is the loss scaler's
/// scale after the iteration (null when the run scales no loss), and SkippedIterations counts the run's skipped iterations
/// up to and including this one (those before a resume too). ValidationLoss is the validation loss computed after the
/// iteration (every --eval-interval and after the last; null otherwise), outside the iteration's time. AllocatedPeakBytes is
/// the CUDA caching allocator's peak allocated bytes so far (torch.cuda.max_memory_allocated; in parallel runs the maximum over
/// ranks), null on CPU or where the allocator's statistics cannot be read.
/// </summary>
public sealed record IterationRecord(
    long Iteration,
    double ElapsedMs,
    double TokensPerSecondPerGpu,
    double ModelTflopsPerGpu,
    double? Mfu,
    double Loss,
    double? GradNorm,
    double LearningRate,
    long MemoryUsedBytes,
    long MemoryPeakBytes,
    double HostGapMs,
    double EnqueueMs,
    double? CommunicationMs = null,
    double? LossScale = null,
    long SkippedIterations = 0,
    double? ValidationLoss = null,
    long? AllocatedPeakBytes = null);
