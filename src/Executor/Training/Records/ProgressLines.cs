using System.Globalization;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training.Records;

/// <summary>The lines a run prints, one format whatever the number of ranks (rank 0 prints them).</summary>
public static class ProgressLines
{
    /// <summary>How the data-parallel ranks shard: Megatron-FSDP's strategy, DeepSpeed's ZeRO 2 or 3, or the distributed optimizer.</summary>
    private static string Sharding(RunDescription d) =>
        d.Fsdp is not null ? $" megatron-fsdp {MegatronFsdp.StrategyName(d.ZeroStage)}"
        : d.ZeroStage >= 2 ? $" zero-{d.ZeroStage}" : d.DistributedOptimizer ? " distributed-optimizer" : "";

    /// <summary>What runs: model, device, precision, layout and batch, and the libtorch that runs it.</summary>
    public static string Start(RunRecord run)
    {
        var d = run.Description;
        var r = d.RecomputeOrNone;
        string layout = $"tp {d.TensorParallel} pp {d.PipelineParallel}" +
            (d.LayersPerVirtualStage is int l ? $" (interleaved, {l} layers per chunk)" : "") +
            (d.PipelineStagesDiffer ? $" (layers {string.Join(", ", d.LayersPerStage(run.Model))})" : "") + $" cp {d.ContextParallel} dp {d.DataParallel}" +
            (d.SequenceParallel ? " sp" : "") + Sharding(d) +
            (d.SyncFactor < 1 ? string.Create(CultureInfo.InvariantCulture, $" p {d.SyncFactor}") : "") +
            (d.OverlapOrDefault.GradientReduce ? " overlap-grad-reduce" : "") + (d.OverlapOrDefault.ParamGather ? " overlap-param-gather" : "") +
            (r.Granularity == RecomputeGranularity.None ? ""
                : r.Granularity == RecomputeGranularity.Selective ? " selective-recompute"
                : $" full-recompute {r.Method.ToString().ToLowerInvariant()} {r.NumLayers}") +
            (r.NormOutputs ? " kwai-recompute-norm" : "") + (r.MlpActivation ? " kwai-recompute-mlp-activation" : "");
        return $"harness run: {run.Model.Name} ({run.Parameters:N0} parameters{(d.WorldSize > 1 ? " on rank 0" : "")}) on {run.Devices()}, " +
               $"{d.Precision.ToString().ToLowerInvariant()}: {layout}, global batch {d.GlobalBatch} x s {run.Model.SeqLength}" +
               (run.PaddedBeyondSerial
                   ? $", vocabulary padded to {run.Model.VocabSize} rows (the serial model's {run.SerialVocabSize}: its losses differ from the serial run's by the extra rows in the softmax)"
                   : "") +
               (run.Settings.RanksOnOneDevice
                   ? $"; all {d.WorldSize} ranks on one device as threads of one process: memory is the sum over ranks, and times are not a cluster's (no NCCL, no overlap)"
                   : "") + $"; {run.Runtime}";
    }

    /// <summary>Megatron's evaluate_and_print_results block (megatron/training/training.py): the validation loss and its
    /// perplexity exp(min(20, loss)), between two rules as long as the line.</summary>
    public static IEnumerable<string> Validation(long iteration, double loss)
    {
        var c = CultureInfo.InvariantCulture;
        // Python's :.6E writes two exponent digits at least, as this custom format does (.NET's E6 writes three).
        const string E6 = "0.000000E+00";
        string line = $" validation loss at iteration {iteration} | lm loss value: {loss.ToString(E6, c)} | lm loss PPL: {Math.Exp(Math.Min(20, loss)).ToString(E6, c)} | ";
        string rule = new('-', line.Length + 1);
        return [rule, line, rule];
    }

    /// <summary>One iteration: loss, gradient norm (none when the step was skipped, as Megatron prints none), rate, time,
    /// throughput per GPU (and TFLOP/s with MFU on a GPU), time in communication (parallel runs), peak memory (the maximum
    /// over ranks), the time the rest of the run should take; with a loss scaler, Megatron's "loss scale" and "number of
    /// skipped iterations" (<paramref name="skippedSinceLastLine"/>: over the iterations since the previous line, as
    /// Megatron counts them).</summary>
    public static string Iteration(IterationRecord r, RunRecord run, TimeSpan remaining, long skippedSinceLastLine)
    {
        var c = CultureInfo.InvariantCulture;
        string norm = r.GradNorm is double g ? string.Create(c, $" | grad norm {g,7:F3}") : "";
        string line = string.Create(c, $"iter {r.Iteration,6}/{run.Settings.TrainIters} | loss {r.Loss,8:F4}{norm} | lr {r.LearningRate:E2} | {r.ElapsedMs,8:F1} ms | {r.TokensPerSecondPerGpu,10:N0} tok/s/GPU");
        if (r.Mfu is double mfu) line += string.Create(c, $" | {r.ModelTflopsPerGpu:F1} TFLOP/s | MFU {100 * mfu:F1}%");
        if (r.CommunicationMs is double comm) line += string.Create(c, $" | comm {comm,7:F1} ms");
        if (r.LossScale is double scale) line += string.Create(c, $" | loss scale {scale:F1} | number of skipped iterations {skippedSinceLastLine,3}");
        return line + string.Create(c, $" | peak {r.MemoryPeakBytes / 1048576.0:F0} MiB{(run.Description.WorldSize > 1 ? " (max over ranks)" : "")}")
            + (r.Iteration < run.Settings.TrainIters ? $" | ETA {Duration(remaining)}" : "");
    }

    /// <summary>A duration as a person reads it: 45s, 3m20s, 2h05m.</summary>
    public static string Duration(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:00}m" : t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes}m{t.Seconds:00}s" : $"{Math.Ceiling(t.TotalSeconds):0}s";

    /// <summary>A run stopped before --train-iters: by a signal (Megatron's --exit-signal-handler), --exit-duration-in-mins or
    /// --exit-interval (Megatron's checkpoint_and_decide_exit).</summary>
    public static string Stopped(long iteration, RunRecord run, StopReason reason)
    {
        var s = run.Settings;
        string why = reason switch
        {
            StopReason.Interrupt => "interrupted (SIGINT)",
            StopReason.Terminate => "interrupted (SIGTERM)",
            StopReason.ExitDuration => $"stopped by --exit-duration-in-mins {s.ExitDurationInMins}",
            _ => $"stopped by --exit-interval {s.ExitInterval}",
        };
        return $"harness run: {why} after iteration {iteration} of {s.TrainIters}" +
            (s.Save is null ? "." : $"; saved a checkpoint of it in {s.Save} (resume with --load {s.Save}).");
    }

    /// <summary>What a finished (or stopped) run wrote (offload.csv where it offloaded activations).</summary>
    public static string Wrote(string output, RunRecord run, bool offload) =>
        $"harness run: wrote {output}/metrics.csv, summary.json, {(offload ? $"{OffloadCsv.FileName}, " : "")}loss.png, throughput.png" +
        (run.Settings.Save is null ? "" : $"; checkpoint in {run.Settings.Save}");
}
