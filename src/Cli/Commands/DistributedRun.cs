using Harness.Megatron;
using Harness.Cli.Arguments;
using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Distributed.Launch;
using Harness.Executor.Distributed.Nccl;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness run` over several ranks, by Megatron's parallel flags:
/// - `--device cpu --nproc-per-node N`: N ranks as threads of this process (the in-process backend);
/// - `--device cuda --nproc-per-node N`: this process launches N copies of itself, one per GPU, with torchrun's
///   variables, and waits (every rank's errors reach the user);
/// - `--device cuda --nproc-per-node N --ranks-on-one-device`: N ranks as threads of this process on GPU 0, through the
///   in-process backend (NCCL refuses two ranks on one GPU; the in-process backend exchanges CUDA tensors as it does CPU
///   ones, every rank's kernels queued on the device's default stream in the order the exchanges allow);
/// - started by torchrun, Slurm or the launcher above (RANK/SLURM_PROCID set): one rank over NCCL, the unique id
///   shared through MASTER_ADDR:MASTER_PORT.
/// Every rank runs the executor's one loop (<see cref="TrainingRun.RunRank"/>); rank 0 writes metrics.csv (memory: the
/// maximum over ranks), summary.json (with every rank's peak) and the plots.
/// </summary>
public static class DistributedRun
{
    /// <summary>The flags that only a run over several ranks reads: its layout and its launch.</summary>
    private static readonly string[] ParallelFlags =
    [
        "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--num-layers-per-virtual-pipeline-stage",
        "--context-parallel-size", "--sequence-parallel", "--use-distributed-optimizer", "--zero-stage", "--sync-factor",
        "--cp-comm-type", "--hierarchical-context-parallel-sizes", "--overlap-grad-reduce", "--overlap-param-gather", "--ddp-bucket-size", "--nproc-per-node", "--master-port",
        "--ranks-on-one-device",
    ];

    /// <summary>Whether the command line or the environment asks for more than one rank or a parallel layout.</summary>
    public static bool Requested(CommandLine cl) =>
        ParallelFlags.Any(f => cl.String(f) is not null || cl.Switch(f)) || Environment.GetEnvironmentVariable("RANK") is { Length: > 0 } || Environment.GetEnvironmentVariable("SLURM_PROCID") is { Length: > 0 };

    /// <summary>Runs (model, description, settings) over its ranks, launched as <paramref name="env"/> says or as --nproc-per-node
    /// asks; <paramref name="args"/> are this command's, for the GPU ranks it starts.</summary>
    public static int Run(ModelSpec model, RunDescription description, RunSettings settings, IReadOnlyList<string> args, LaunchEnvironment env)
    {
        bool cuda = settings.Device == ExecutionDevice.Cuda, inProcess = !cuda || settings.RanksOnOneDevice;
        if (inProcess && env.IsDistributed)
            return RunCommand.UserError($"{(cuda ? "--ranks-on-one-device" : "--device cpu")} runs every rank as a thread of one process; start it once, without RANK/SLURM_PROCID.");
        var job = new TrainingRun(model, description, settings, settings.Out!, Console.WriteLine);
        // The dataset and the checkpoint opened once here: a missing or damaged one is one sentence and exit 2 rather than
        // the same failure from every rank.
        try { job.Prepare(); }
        catch (Exception e) when (e is FileNotFoundException or InvalidDataException or ArgumentException) { return RunCommand.UserError(e.Message); }

        if (!inProcess && !env.IsDistributed && settings.NprocPerNode > 1)
        {
            if (WorkerLauncher.Refusal(settings.NprocPerNode) is string refusal) return RunCommand.UserError(refusal);
            int port = settings.MasterPort ?? (int.TryParse(Environment.GetEnvironmentVariable("MASTER_PORT"), out int p) ? p : LaunchEnvironment.DefaultPort);
            var (file, prefix) = SelfCommand();
            // Signals reach the ranks (SIGTERM through the launcher): they stop together, save and exit, and the launcher waits.
            return WorkerLauncher.Run(settings.NprocPerNode, file, [.. prefix, "run", .. args], port, Console.Out, Console.Error);
        }
        try { TorchRuntime.Initialize(settings.Device, settings.Libtorch); }
        catch (NativeLoadException e) { return RunCommand.UserError(e.Message); }
        int world = description.WorldSize;
        var stop = RunCommand.NewStop(settings);
        using var signals = new StopSignals(stop);
        try
        {
            if (inProcess)
            {
                if (!cuda) set_num_threads(Math.Max(1, Environment.ProcessorCount / world));
                // Ranks as threads on one GPU each run their own backward (AutogradThreads): tried here first, so that where it
                // cannot be set the run is one sentence before any rank starts.
                if (cuda && AutogradThreads.RunBackwardOnThisThread() is string why)
                    return RunCommand.UserError($"--ranks-on-one-device on CUDA needs each rank to run its own backward, and {why}.");
                var device = cuda ? new Device(DeviceType.CUDA, 0) : CPU;
                InProcessJob.Run(world, comm =>
                {
                    if (cuda) AutogradThreads.RunBackwardOnThisThread();
                    job.RunRank(comm, device, 0, stop);
                });
            }
            else
            {
                var timeout = TimeSpan.FromMinutes(10);
                using var comm = NcclCommunicator.CreateWorld(env.Rank, env.WorldSize, env.LocalRank, id => TcpRendezvous.Share(env, id, timeout), timeout);
                job.RunRank(comm, new Device(DeviceType.CUDA, env.LocalRank), env.LocalRank, stop);
            }
        }
        // This GPU rank's data or checkpoint files, or a loss every rank found not finite.
        catch (Exception e) when (e is InvalidDataException or NonFiniteException) { return RunCommand.UserError(e.Message + job.Kept); }
        catch (Exception e) when (AllocationFailure.Is(e))
        {
            // This GPU rank ran out of memory (the launcher stops the others).
            return RunCommand.UserError(OutOfMemory.Sentence(model, description, settings.Device, env.Rank) + job.Kept);
        }
        catch (RankFailuresException e) when (e.Failures.All(f => f.Error is InvalidDataException or NonFiniteException))
        {
            // The data did not fit the model (every rank reads the same batch), or the loss every rank sees is not finite:
            // one sentence, not one per rank.
            foreach (var message in e.Failures.Select(f => f.Error.Message).Distinct()) Console.Error.WriteLine($"harness run: {message}{job.Kept}");
            return 2;
        }
        catch (RankFailuresException e) when (e.Failures.Any(f => AllocationFailure.Is(f.Error)))
        {
            // A CPU rank (a thread of this process) ran out of memory: the first one's sentence, not libtorch's frames.
            int rank = e.Failures.First(f => AllocationFailure.Is(f.Error)).Rank;
            return RunCommand.UserError(OutOfMemory.Sentence(model, description, settings.Device, rank) + job.Kept);
        }
        // A libtorch without an export the executor calls (an at::Context switch, storage resizing), on this GPU rank or on a
        // rank of this process: one sentence.
        catch (NativeLoadException e) { return RunCommand.UserError(e.Message + job.Kept); }
        catch (RankFailuresException e) when (e.Failures.Any(f => f.Error is NativeLoadException))
        {
            return RunCommand.UserError(e.Failures.First(f => f.Error is NativeLoadException).Error.Message + job.Kept);
        }
        // An operator without a deterministic version under --deterministic-mode, on this GPU rank or on a rank of this process.
        catch (Exception e) when (NondeterministicOperation.Is(e)) { return RunCommand.UserError(NondeterministicOperation.Sentence(e) + job.Kept); }
        catch (RankFailuresException e) when (e.Failures.Any(f => NondeterministicOperation.Is(f.Error)))
        {
            return RunCommand.UserError(NondeterministicOperation.Sentence(e.Failures.First(f => NondeterministicOperation.Is(f.Error)).Error) + job.Kept);
        }
        catch (RankFailuresException e)
        {
            foreach (var (rank, error) in e.Failures)
                Console.Error.WriteLine($"harness run: rank {rank}: {error.Message}{(rank == e.Failures[^1].Rank ? job.Kept : "")}");
            return 1;
        }
        catch (Exception e) when (e is CommunicatorException or CudaException)
        {
            Console.Error.WriteLine($"harness run: rank {env.Rank}: {e.Message}{job.Kept}");
            return 1;
        }
        return StopSignals.ExitCode(job.Stopped);
    }

    /// <summary>How to start this program again: the apphost itself, or `dotnet harness.dll`.</summary>
    internal static (string File, string[] Prefix) SelfCommand()
    {
        string path = Environment.ProcessPath ?? "dotnet";
        return Path.GetFileNameWithoutExtension(path) == "dotnet" ? (path, [Environment.GetCommandLineArgs()[0]]) : (path, []);
    }
}
