using Harness.Megatron;
using Harness.Cli.Arguments;
using Harness.Executor.Data;
using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Distributed.Launch;
using Harness.Executor.Distributed.Nccl;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
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
        .. RunDescriptionFlags.Flags.Where(f => LayoutFlags.Contains(f.Name)),
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
        var job = new ParallelJob(options, parallel, model, output, logInterval, runtime, ring, bucketSize, overlapParamGather);
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
        catch (Exception e) when (OutOfMemory.Is(e))
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
    private static RunDescription Config(CommandLine cl, TrainingOptions o, int world, out ModelSpec model)
    {
        int t = cl.Int("--tensor-model-parallel-size") ?? 1, p = cl.Int("--pipeline-model-parallel-size") ?? 1, c = cl.Int("--context-parallel-size") ?? 1;
        int divisor = Math.Max(1, t * p * c);
        if (world % divisor != 0) cl.Errors.Add($"--nproc-per-node {world} is not divisible by tensor {t} x pipeline {p} x context {c}.");
        int dp = Math.Max(1, world / divisor);
        model = VocabPadding.Pad(o.Model, o.MakeVocabSizeDivisibleBy, t);
        double syncFactor = cl.Double("--sync-factor") ?? 1.0;
        return new RunDescription(dp, t, p, cl.Int("--num-layers-per-virtual-pipeline-stage"), c, cl.Switch("--sequence-parallel"),
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
}
