using System.Diagnostics;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.Training.Interchange;
using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;
using Harness.Simulator.Costs;

namespace Harness.Executor.Training;

/// <summary>
/// The training loop (Megatron's train()), the same for one device and for every rank of many: resume from --load, then
/// per iteration the scheduled rate, one step, its record (time, throughput, TFLOP/s and MFU, loss, gradient norm, memory,
/// the loss scale and the iterations skipped so far, the validation loss every --eval-interval and after the last),
/// Megatron's check for a NaN or Inf loss or gradient norm (<see cref="NanCheck"/>), a checkpoint every --save-interval and
/// after the last iteration, the CUDA profiler range of --profile; until
/// --train-iters, a signal (SIGINT, SIGTERM), --exit-duration-in-mins or --exit-interval (<see cref="RunStop"/>), after which
/// what was trained is saved too. Rank 0 records
/// (<see cref="RunRecorder"/>); when a step fails after some iterations were recorded, their summary and plots are written
/// before the failure goes on.
/// </summary>
public static class TrainingLoop
{
    /// <param name="recorder">The writer's records (rank 0); null on the other ranks.</param>
    /// <param name="stop">What asks the run to stop early: a signal, --exit-duration-in-mins.</param>
    /// <returns>The iterations recorded (none on ranks that do not record) and why the run stopped before --train-iters
    /// (<see cref="StopReason.None"/> when it did not).</returns>
    public static (IReadOnlyList<IterationRecord> Rows, StopReason Stop) Run(ITrainStep step, RunRecord run, RunRecorder? recorder, Action<string> log, RunStop stop)
    {
        var settings = run.Settings;
        var d = run.Description;
        // A Hugging Face folder gives the weights only: the run starts at iteration 0 with a fresh optimizer.
        // The folder's tensors, their float32 copies and the shards cut from them are freed once copied into the weights.
        if (settings is { Load: string folder, LoadFormat: LoadFormat.Hf })
            using (TorchSharp.torch.NewDisposeScope())
                step.LoadWeights(HfCheckpoint.Read(folder, step.Model));
        var resumed = settings.Load is null || settings.LoadFormat == LoadFormat.Hf ? null : step.Resume(settings.Load);
        long iteration = resumed?.Iteration ?? 0, skipped = resumed?.SkippedIterations ?? 0;
        recorder?.Begin(iteration);
        var schedule = new LearningRateSchedule(settings.LearningRateOrDefault, settings.TrainIters, d.GlobalBatch);
        double tokens = (double)d.GlobalBatch * run.Model.SeqLength, flopsPerIteration = Flops.ModelFlopsPerToken(run.Model) * tokens;
        var stopped = StopReason.None;
        long? lastSaved = null;
        try
        {
            long lastEnd = Stopwatch.GetTimestamp();
            while (iteration < settings.TrainIters && stopped == StopReason.None)
            {
                if (iteration == settings.Profile?.StepStart) CudaProfiler.Start();
                long start = Stopwatch.GetTimestamp();
                // Megatron steps its scheduler only after a successful update (train_step): skipped iterations hold the rate.
                double lr = schedule.At(iteration - skipped);
                var r = step.Step(iteration, lr, stop);
                iteration++;
                if (r.Skipped) skipped++;
                if (iteration == settings.Profile?.StepEnd) CudaProfiler.Stop();
                // The period runs from the previous iteration's end to this one's: host time between steps included.
                double elapsed = Stopwatch.GetElapsedTime(lastEnd, r.SyncedAt).TotalSeconds;
                double tflops = flopsPerIteration / elapsed / d.WorldSize / 1e12;
                // Megatron's evaluate after the step, outside its time: every --eval-interval and after the last iteration, each
                // evaluation reading the validation samples after the previous one's.
                double? validation = settings.ValidationDue(iteration)
                    ? step.Validate((iteration - 1) / settings.EvalInterval * settings.EvalIters * d.GlobalBatch) : null;
                recorder?.Append(new IterationRecord(iteration, elapsed * 1e3, tokens / elapsed / d.WorldSize, tflops, run.Mfu(tflops), r.Loss, r.GradNorm, lr,
                    r.MemoryUsedBytes, r.MemoryPeakBytes, Stopwatch.GetElapsedTime(lastEnd, start).TotalMilliseconds,
                    Stopwatch.GetElapsedTime(start, r.EnqueuedAt).TotalMilliseconds, r.CommunicationMs, r.LossScale, skipped, validation, r.AllocatedPeakBytes));
                lastEnd = validation is null ? r.SyncedAt : Stopwatch.GetTimestamp();
                // Megatron's checkpoint_and_decide_exit: a signal, the time limit (agreed over the ranks by the step), then
                // --exit-interval; each saves what was trained once, unless the regular save just did.
                stopped = iteration >= settings.TrainIters ? StopReason.None
                    : r.Stop != StopReason.None ? r.Stop : settings.ExitDue(iteration) ? StopReason.ExitInterval : StopReason.None;
                if (settings.CheckForNanInLossAndGrad && NanCheck.Find(r) is string what)
                    throw new NonFiniteException(NanCheck.Sentence(iteration, what, settings.Save, lastSaved));
                if (settings.CheckpointDue(iteration) || (stopped != StopReason.None && settings.Save is not null))
                {
                    step.Save(settings.Save!, iteration);
                    lastSaved = iteration;
                }
            }
        }
        catch when (recorder is { Rows.Count: > 0 })
        {
            // A failed step ends the run; what the finished iterations measured stays: summary.json and the plots from
            // metrics.csv's rows (every rank's own peak is unknown then: the others may be gone).
            recorder.KeepOnFailure();
            throw;
        }
        var peaks = step.PeakMemoryPerRank();
        var offloaded = step.OffloadedPerRank();
        if (recorder is null) return ([], stopped);
        if (stopped != StopReason.None) log(ProgressLines.Stopped(iteration, run, stopped));
        recorder.Finish(peaks, stopped, offloaded);
        return (recorder.Rows, stopped);
    }
}
