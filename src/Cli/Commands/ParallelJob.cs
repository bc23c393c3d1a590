using System.Diagnostics;
using System.Globalization;
using Harness.Executor.Data;
using Harness.Executor.Distributed;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Training.Records;
using Harness.Executor.Training;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Cli.Commands;

/// <summary>What every rank runs: build its part of the model, train, and (rank 0) record.</summary>
internal sealed class ParallelJob(TrainingOptions o, RunDescription parallel, ModelSpec model, string output, int logInterval, string runtime, bool ringAttention,
    long? bucketSize, bool overlapParamGather)
{
    /// <summary>Iterations rank 0 recorded (metrics.csv, summary.json, plots) before a step failed; 0 if none did.</summary>
    public int RecordedBeforeFailure { get; private set; }

    /// <summary>What a failure message adds when iterations were recorded before it.</summary>
    public string Kept => RecordedBeforeFailure == 0 ? ""
        : $" (the {RecordedBeforeFailure} iterations done are in {output}: metrics.csv, summary.json, plots)";

    public void Rank(ICommunicator world, Device device, int localDevice)
    {
        var layout = RankOrder.For(world.Size, parallel.TensorParallel, parallel.ContextParallel, parallel.PipelineParallel);
        using var groups = ProcessGroups.Create(world, layout);
        var dtype = o.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        var fusions = Fusions.Resolve(o.FusedKernels, o.GradientAccumulationFusion, device, dtype);
        using var trainer = new ParallelTrainer(groups, parallel, model, device, dtype, o.AdamOptions, o.Recompute, o.Seed, ringAttention, bucketSize, fusions,
            overlapParamGather, o.HiddenDropout, o.AttentionDropout);
        ITokenSource source = o.MockData ? new MockTokenSource(o.Model.VocabSize, o.Seed) : new IndexedDataset(o.DataPath!);
        using var disposeSource = source as IDisposable;
        var sampler = new GptSampler(source, model.SeqLength, o.Seed);
        int s = model.SeqLength, g = o.GlobalBatchSize, b = parallel.MicroBatch, dp = parallel.DataParallel;
        var host = new long[g * (s + 1)];
        double flopsPerIteration = Flops.ModelFlopsPerToken(model) * g * s;
        bool cuda = device.type == DeviceType.CUDA;
        string deviceName = DeviceProbe.Name(cuda, localDevice);
        bool writer = world.Rank == 0;
        if (writer)
        {
            Directory.CreateDirectory(output);
            Console.WriteLine($"harness run: {model.Name} on {world.Size} x {deviceName}: tp {parallel.TensorParallel} pp {parallel.PipelineParallel}" +
                $"{(parallel.LayersPerVirtualStage is int l ? $" (interleaved, {l} layers per chunk)" : "")} cp {parallel.ContextParallel} dp {parallel.DataParallel}" +
                $"{(parallel.SequenceParallel ? " sp" : "")}{(parallel.DistributedOptimizer ? " distributed-optimizer" : "")}" +
                $"{(parallel.SyncFactor < 1 ? $" p {parallel.SyncFactor}" : "")}{(parallel.OverlapOrDefault.GradientReduce ? " overlap-grad-reduce" : "")}{(overlapParamGather ? " overlap-param-gather" : "")}, global batch {g} x s {s}; {runtime}");
            foreach (var note in fusions.Notes) Console.WriteLine($"harness run: note: {note}");
        }
        long first = o.Load is null ? 0 : DistributedCheckpoint.Load(o.Load, trainer, sampler).Iteration;
        using var csv = writer ? new MetricsCsv(Path.Combine(output, "metrics.csv"), append: o.Load is not null) : null;
        var records = new List<IterationRecord>();
        long peak = 0;
        try
        {
            var lastEnd = Stopwatch.GetTimestamp();
            for (long iteration = first; iteration < o.TrainIters; iteration++)
            {
                using var scope = NewDisposeScope();
                long start = Stopwatch.GetTimestamp();
                var comm0 = trainer.CommunicationTime;
                sampler.Next(g, host);
                TokenRange.Check(host, o.Model.VocabSize);
                var batch = tensor(host, [g, s + 1]).to(device);
                double lr = o.LearningRate.At(iteration);
                var (loss, norm) = trainer.Step(lr, i =>
                {
                    var rows = batch.narrow(0, (i * dp + groups.DataRank) * b, b);
                    return (rows[.., ..s], rows[.., 1..]);
                }, iteration);
                long end = Stopwatch.GetTimestamp();
                double elapsed = Stopwatch.GetElapsedTime(lastEnd, end).TotalSeconds;
                double hostGapMs = Stopwatch.GetElapsedTime(lastEnd, start).TotalMilliseconds;
                lastEnd = end;
                long used = DeviceProbe.UsedBytes(cuda, localDevice);
                peak = Math.Max(peak, used);
                var peaks = tensor(new[] { (double)peak }, device: device);
                world.AllReduce(peaks, ReduceOp.Max);
                double tflops = flopsPerIteration / elapsed / world.Size / 1e12;
                var r = new IterationRecord(iteration + 1, elapsed * 1e3, (double)g * s / elapsed / world.Size, tflops,
                    o.Mfu(tflops), loss, norm, lr, used, (long)peaks.cpu().item<double>(),
                    hostGapMs, Stopwatch.GetElapsedTime(start, end).TotalMilliseconds,
                    (trainer.CommunicationTime - comm0).TotalMilliseconds);
                if (o.CheckpointDue(r.Iteration)) DistributedCheckpoint.Save(o.Save!, r.Iteration, o.Seed, trainer, sampler);
                if (!writer) continue;
                csv!.Append(r);
                records.Add(r);
                if (r.Iteration % logInterval == 0 || r.Iteration == o.TrainIters)
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"iter {r.Iteration,6}/{o.TrainIters} | loss {r.Loss,8:F4} | grad norm {r.GradNorm,7:F3} | {r.ElapsedMs,8:F1} ms | {r.TokensPerSecondPerGpu,10:N0} tok/s/GPU | comm {r.CommunicationMs,7:F1} ms | peak {r.MemoryPeakBytes / 1048576.0:F0} MiB (max over ranks)"));
            }
        }
        catch when (writer && records.Count > 0)
        {
            // A failed step ends the job; what the finished iterations measured stays: summary.json and the plots
            // from metrics.csv's rows (every rank's own peak is unknown then: the others may be gone).
            Record(records, peakPerRank: null);
            RecordedBeforeFailure = records.Count;
            throw;
        }
        // Every rank's peak to rank 0, for the summary.
        var all = zeros(world.Size, dtype: ScalarType.Float64, device: device);
        world.AllGather(tensor(new[] { (double)peak }, device: device), all);
        if (!writer || records.Count == 0) return;
        Record(records, all.cpu().data<double>().Select(v => (long)v).ToList());
        Console.WriteLine($"harness run: wrote {output}/metrics.csv, summary.json, loss.png, throughput.png" + (o.Save is null ? "" : $"; checkpoint in {o.Save}"));

        void Record(IReadOnlyList<IterationRecord> done, IReadOnlyList<long>? peakPerRank)
        {
            RunSummary.From(o with { Model = model }, deviceName, runtime, trainer.Buffer.Count, done, parallel, peakPerRank).Write(Path.Combine(output, "summary.json"));
            Plots.Write(output, done, $"{model.Name} on {world.Size} x {deviceName}");
        }
    }
}
