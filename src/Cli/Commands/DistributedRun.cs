using System.Diagnostics;
using System.Globalization;
using Harness.Cli.Arguments;
using Harness.Executor.Data;
using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Distributed.Launch;
using Harness.Executor.Distributed.Nccl;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Records;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness run` over several ranks, by Megatron's parallel flags:
/// - `--device cpu --nproc-per-node N`: N ranks as threads of this process (the in-process backend);
/// - `--device cuda --nproc-per-node N`: this process launches N copies of itself, one per GPU, with torchrun's
///   variables, and waits (every rank's errors reach the user);
/// - started by torchrun, Slurm or the launcher above (RANK/SLURM_PROCID set): one rank over NCCL, the unique id
///   shared through MASTER_ADDR:MASTER_PORT.
/// Rank 0 writes metrics.csv (memory: the maximum over ranks), summary.json (with every rank's peak) and the plots.
/// </summary>
public static class DistributedRun
{
    // Declared before Flags, which reads it during static initialization.
    private static readonly HashSet<string> LayoutFlags =
    [
        "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--num-layers-per-virtual-pipeline-stage",
        "--context-parallel-size", "--sequence-parallel", "--use-distributed-optimizer", "--sync-factor",
    ];

    /// <summary>The launch flags, and the layout flags `harness simulate` takes (the same names and help).</summary>
    public static readonly Flag[] Flags =
    [
        new("--nproc-per-node", true, "ranks to run on this node: threads on CPU, one process per GPU on CUDA"),
        new("--master-port", true, "rendezvous port when launching GPU ranks (default MASTER_PORT or 29500)"),
        new("--cp-comm-type", true, "context parallelism: all_gather (default) or p2p (ring attention)"),
        new("--overlap-grad-reduce", false, "reduce gradient buckets during backward, on their own CUDA stream (off by default, as in Megatron)"),
        new("--overlap-param-gather", false, "all-gather each bucket's updated weights as the next forward first needs them, on a CUDA stream of its own (with --use-distributed-optimizer)"),
        new("--ddp-bucket-size", true, "elements per gradient bucket (default max(40M, 1M x data-parallel size))"),
        .. ParallelArguments.Flags.Where(f => LayoutFlags.Contains(f.Name)),
    ];

    /// <summary>Whether the command line or the environment asks for more than one rank or a parallel layout.</summary>
    public static bool Requested(CommandLine cl) =>
        cl.HasAny(Flags) || Environment.GetEnvironmentVariable("RANK") is { Length: > 0 } || Environment.GetEnvironmentVariable("SLURM_PROCID") is { Length: > 0 };

    public static int Run(CommandLine cl, string[] args, TrainingOptions options, string output, int logInterval)
    {
        LaunchEnvironment env;
        try { env = LaunchEnvironment.FromProcess(); }
        catch (ArgumentException e) { return UserError(e.Message); }
        bool cuda = options.Device == ExecutionDevice.Cuda;
        int nproc = cl.Int("--nproc-per-node") ?? 1;
        if (nproc < 1) return UserError($"--nproc-per-node is {nproc}; it must be at least 1.");
        if (!cuda && env.IsDistributed) return UserError("--device cpu runs every rank as a thread of one process; start it once, without RANK/SLURM_PROCID.");
        int world = env.IsDistributed ? env.WorldSize : nproc;
        var parallel = Config(cl, options, world, out var model);
        if (cl.Errors.Count > 0) return UserError(cl.Errors[0]);
        var errors = parallel.Validate(model, world);
        if (errors.Count > 0) return UserError(errors[0]);
        int? bucketSize = cl.Int("--ddp-bucket-size");
        if (bucketSize < 1) return UserError($"--ddp-bucket-size is {bucketSize}; it must be at least 1 (elements).");
        bool overlapParamGather = cl.Switch("--overlap-param-gather");
        if (overlapParamGather && !parallel.DistributedOptimizer)
            return UserError("--overlap-param-gather needs --use-distributed-optimizer: it overlaps that optimizer's all-gather of the weights.");

        // The dataset opened once here, so that a missing or damaged one, or one shorter than a sample, is one sentence
        // and exit 2 rather than the same failure from every rank.
        if (!options.MockData)
        {
            try
            {
                using var data = new IndexedDataset(options.DataPath!);
                _ = new GptSampler(data, model.SeqLength, options.Seed);
            }
            catch (Exception e) when (e is FileNotFoundException or InvalidDataException or ArgumentException) { return UserError(e.Message); }
        }
        // A checkpoint of another model or weight split is refused once, before any rank starts.
        if (options.Load is not null)
        {
            try
            {
                var (dir, meta) = Checkpoint.Latest(options.Load);
                Checkpoint.RequireCompatible(dir, meta, model.Name, CheckpointLayout.Of(parallel, model));
            }
            catch (Exception e) when (e is FileNotFoundException or InvalidDataException) { return UserError(e.Message); }
        }

        if (cuda && !env.IsDistributed && nproc > 1)
        {
            int port = cl.Int("--master-port") ?? (int.TryParse(Environment.GetEnvironmentVariable("MASTER_PORT"), out int p) ? p : LaunchEnvironment.DefaultPort);
            var (file, prefix) = SelfCommand();
            return WorkerLauncher.Run(nproc, file, [.. prefix, "run", .. args], port, Console.Out, Console.Error);
        }
        string runtime;
        try { runtime = TorchRuntime.Initialize(options.Device, options.Libtorch); }
        catch (NativeLoadException e) { return UserError(e.Message); }
        bool ring = cl.Choice("--cp-comm-type", "all_gather", "p2p") == "p2p";
        if (cl.Errors.Count > 0) return UserError(cl.Errors[0]);
        var job = new Job(options, parallel, model, output, logInterval, runtime, ring, bucketSize, overlapParamGather);
        try
        {
            if (!cuda)
            {
                set_num_threads(Math.Max(1, Environment.ProcessorCount / world));
                InProcessJob.Run(world, comm => job.Rank(comm, CPU, 0));
            }
            else
            {
                var timeout = TimeSpan.FromMinutes(10);
                using var comm = NcclCommunicator.CreateWorld(env.Rank, env.WorldSize, env.LocalRank, id => TcpRendezvous.Share(env, id, timeout), timeout);
                job.Rank(comm, new Device(DeviceType.CUDA, env.LocalRank), env.LocalRank);
            }
        }
        catch (InvalidDataException e) { return UserError(e.Message + job.Kept); } // this GPU rank's data or checkpoint files
        catch (System.Runtime.InteropServices.ExternalException e) when (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase))
        {
            // This GPU rank ran out of memory (the launcher stops the others).
            return UserError($"rank {env.Rank}: micro-batch {parallel.MicroBatch} x s {model.SeqLength} of {model.Name} in this layout does not fit in the " +
                             $"device's memory; use a smaller --micro-batch-size, more model parallelism or --recompute-granularity full.{job.Kept}");
        }
        catch (RankFailuresException e) when (e.Failures.All(f => f.Error is InvalidDataException))
        {
            // The data did not fit the model (every rank reads the same batch): one sentence, not one per rank.
            foreach (var message in e.Failures.Select(f => f.Error.Message).Distinct()) Console.Error.WriteLine($"harness run: {message}{job.Kept}");
            return 2;
        }
        catch (RankFailuresException e)
        {
            foreach (var (rank, error) in e.Failures)
                Console.Error.WriteLine($"harness run: rank {rank}: {error.Message}{(rank == e.Failures[^1].Rank ? job.Kept : "")}");
            return 1;
        }
        catch (CommunicatorException e)
        {
            Console.Error.WriteLine($"harness run: rank {env.Rank}: {e.Message}{job.Kept}");
            return 1;
        }
        return 0;
    }

    /// <summary>The parallel layout from the flags, and the model with its tables padded as Megatron pads them (<see cref="VocabPadding"/>).</summary>
    private static ParallelConfig Config(CommandLine cl, TrainingOptions o, int world, out ModelSpec model)
    {
        int t = cl.Int("--tensor-model-parallel-size") ?? 1, p = cl.Int("--pipeline-model-parallel-size") ?? 1, c = cl.Int("--context-parallel-size") ?? 1;
        int divisor = Math.Max(1, t * p * c);
        if (world % divisor != 0) cl.Errors.Add($"--nproc-per-node {world} is not divisible by tensor {t} x pipeline {p} x context {c}.");
        int dp = Math.Max(1, world / divisor);
        model = VocabPadding.Pad(o.Model, o.MakeVocabSizeDivisibleBy, t);
        double syncFactor = cl.Double("--sync-factor") ?? 1.0;
        return new ParallelConfig(dp, t, p, cl.Int("--num-layers-per-virtual-pipeline-stage"), c, cl.Switch("--sequence-parallel"),
            o.MicroBatchSize, o.GlobalBatchSize, ZeroStage: cl.Switch("--use-distributed-optimizer") ? 1 : 0, SyncFactor: syncFactor,
            Precision: o.Bf16 ? Precision.Bf16 : Precision.Fp32,
            // As the executor runs it, for `harness validate`: pipeline sends go out grouped with the next receive and
            // are waited for (P2PCommunication), and the process has the hardware queues its environment gives it.
            Overlap: new OverlapSpec(GradientReduce: cl.Switch("--overlap-grad-reduce"), PipelineP2p: false,
                DeviceMaxConnections: int.TryParse(Environment.GetEnvironmentVariable("CUDA_DEVICE_MAX_CONNECTIONS"), out int q) ? q : OverlapSpec.CudaDefaultConnections));
    }

    /// <summary>How to start this program again: the apphost itself, or `dotnet harness.dll`.</summary>
    internal static (string File, string[] Prefix) SelfCommand()
    {
        string path = Environment.ProcessPath ?? "dotnet";
        return Path.GetFileNameWithoutExtension(path) == "dotnet" ? (path, [Environment.GetCommandLineArgs()[0]]) : (path, []);
    }

    private static int UserError(string message)
    {
        Console.Error.WriteLine($"harness run: {message}");
        return 2;
    }

    /// <summary>What every rank runs: build its part of the model, train, and (rank 0) record.</summary>
    private sealed class Job(TrainingOptions o, ParallelConfig parallel, ModelSpec model, string output, int logInterval, string runtime, bool ringAttention,
        long? bucketSize, bool overlapParamGather)
    {
        /// <summary>Iterations rank 0 recorded (metrics.csv, summary.json, plots) before a step failed; 0 if none did.</summary>
        public int RecordedBeforeFailure { get; private set; }

        /// <summary>What a failure message adds when iterations were recorded before it.</summary>
        public string Kept => RecordedBeforeFailure == 0 ? ""
            : $" (the {RecordedBeforeFailure} iterations done are in {output}: metrics.csv, summary.json, plots)";

        public void Rank(ICommunicator world, Device device, int localDevice)
        {
            var layout = RankLayout.For(world.Size, parallel.TensorParallel, parallel.ContextParallel, parallel.PipelineParallel);
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
}
