using Harness.Simulator.Specs;

namespace Harness.Executor.Training.Records;

/// <summary>
/// A run's scalars in a TensorBoard event file (--tensorboard-dir), by the names Megatron-LM gives them
/// (megatron/training/training.py at NVIDIA/Megatron-LM d98e8a6: training_log and evaluate_and_print_results; the timers'
/// "&lt;name&gt;-time" from megatron/core/timers.py, Timers.write). Every --tensorboard-log-interval iterations: learning-rate,
/// batch-size, lm loss, loss-scale (unless --no-log-loss-scale-to-tensorboard, and only where the run scales its loss),
/// world-size (--log-world-size-to-tensorboard), grad-norm (not for an iteration that skipped its step), each also "… vs
/// samples" at the consumed samples (iterations x global batch: the run has no batch-size ramp-up); under
/// --log-memory-to-tensorboard mem-max-allocated-bytes (the caching allocator's peak, as Megatron's allocated_bytes.all.peak;
/// GPU only) and Harness's mem-used-bytes (NVML's used bytes on a GPU, the working set on CPU: the executor has no reserved-bytes
/// figure to give Megatron's mem-reserved-bytes); under --log-timers-to-tensorboard iteration-time (seconds) and throughput
/// (model TFLOP/s per GPU), after this process's first iteration as Megatron does (that one holds the start-up), and the
/// executor's per-iteration times in seconds as Megatron names timers: host-gap-time, enqueue-time and (parallel runs)
/// communication-time. After every validation loss, whatever the interval: "lm loss validation" (and "… vs samples"), and
/// under --log-validation-ppl-to-tensorboard its perplexity exp(min(20, loss)) as "lm loss validation ppl".
/// </summary>
public sealed class TensorBoardLog : IDisposable
{
    private readonly TensorBoardSettings settings;
    private readonly RunDescription description;
    private readonly EventFile file;
    private bool first = true;

    public TensorBoardLog(TensorBoardSettings settings, RunDescription description)
    {
        (this.settings, this.description) = (settings, description);
        file = new EventFile(settings.Dir ?? throw new ArgumentException("TensorBoardLog needs --tensorboard-dir.", nameof(settings)));
    }

    public void Append(IterationRecord r)
    {
        var (byIteration, bySamples) = Scalars(r, settings, description, first);
        first = false;
        long samples = r.Iteration * description.GlobalBatch;
        if (byIteration.Count > 0) file.Append(r.Iteration, byIteration);
        if (bySamples.Count > 0) file.Append(samples, bySamples);
    }

    /// <summary>The scalars iteration <paramref name="r"/> gives: those at its iteration and those "vs samples";
    /// <paramref name="firstOfProcess"/>: the first iteration this process ran, whose time Megatron leaves out.</summary>
    private static (List<(string Tag, double Value)> ByIteration, List<(string Tag, double Value)> BySamples) Scalars(
        IterationRecord r, TensorBoardSettings settings, RunDescription description, bool firstOfProcess)
    {
        var (at, vs) = (new List<(string, double)>(), new List<(string, double)>());
        void Both(string tag, double value) { at.Add((tag, value)); vs.Add((tag + " vs samples", value)); }
        if (settings.Due(r.Iteration))
        {
            Both("learning-rate", r.LearningRate);
            Both("batch-size", description.GlobalBatch);
            Both("lm loss", r.Loss);
            if (settings.LogLossScale && r.LossScale is double scale) Both("loss-scale", scale);
            if (settings.LogWorldSize) Both("world-size", description.WorldSize);
            if (r.GradNorm is double norm) Both("grad-norm", norm);
            if (settings.LogMemory)
            {
                if (r.AllocatedPeakBytes is long peak) at.Add(("mem-max-allocated-bytes", peak));
                at.Add(("mem-used-bytes", r.MemoryUsedBytes));
            }
            if (settings.LogTimers)
            {
                if (!firstOfProcess)
                {
                    at.Add(("iteration-time", r.ElapsedMs / 1000));
                    at.Add(("throughput", r.ModelTflopsPerGpu));
                }
                at.Add(("host-gap-time", r.HostGapMs / 1000));
                at.Add(("enqueue-time", r.EnqueueMs / 1000));
                if (r.CommunicationMs is double communication) at.Add(("communication-time", communication / 1000));
            }
        }
        if (settings.Dir is not null && r.ValidationLoss is double validation)
        {
            Both("lm loss validation", validation);
            if (settings.LogValidationPpl) Both("lm loss validation ppl", Math.Exp(Math.Min(20, validation)));
        }
        return (at, vs);
    }

    public void Dispose() => file.Dispose();
}
