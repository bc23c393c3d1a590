using Harness.Cli.Arguments;
using Harness.Megatron;
using Harness.Cli.Output;
using Harness.Executor.Distributed.Launch;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness run`: real training. Reads Megatron-style flags into the three records of a run (<see cref="RunArguments"/>),
/// has the executor check them (<see cref="TrainingRun.Check"/>), and runs them on one device here, or over several ranks
/// (<see cref="DistributedRun"/>); the executor prints progress and writes metrics.csv (row by row), summary.json and PNG
/// plots to --out. With no arguments it trains the tiny default model on the shipped corpus on CPU.
/// </summary>
public static class RunCommand
{
    public static int Run(string[] args)
    {
        var flags = RunArguments.Flags;
        var cl = CommandLine.Parse(RunArguments.WithDefaults(RunArguments.WithHfModel(args)), flags, FlagReader.Run);
        if (cl.Switch("--help"))
        {
            Console.WriteLine("usage: harness run [Megatron-LM model flags] [options]   (no options: a tiny model on the shipped corpus, on CPU)");
            Flag.PrintHelp(flags.Where(f => f.Help.Length > 0), 44);
            return 0;
        }
        var env = LaunchEnvironment.Single;
        try { env = LaunchEnvironment.FromProcess(); }
        catch (ArgumentException e) { cl.Errors.Add(e.Message); }
        var run = RunArguments.Read(cl, env.IsDistributed ? env.WorldSize : null);
        if (run is var (model, description, settings)) cl.Errors.AddRange(TrainingRun.Check(model, description, settings, description.WorldSize));

        // Whether --out is this run's to remove again: a run refused after the check below leaves no empty folder behind.
        bool outExisted = run is not null && Directory.Exists(run.Value.Settings.Out);
        if (cl.Errors.Count == 0 && run is not null) cl.Errors.AddRange(RunOutputs.Check(run.Value.Settings));
        if (cl.Errors.Count > 0 || run is null)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness run: {e}");
            return 2;
        }
        var (m, d, s) = run.Value;
        // The launch environment the description names, for this process's CUDA context and the ranks it starts (CUDA reads
        // it when the context is created).
        CudaVariables.Apply(d, s);
        if (cl.Ignored.Count > 0) Console.WriteLine($"harness run: Megatron-LM settings accepted but not applied by harness run: {string.Join(' ', cl.Ignored)}");
        int code = DistributedRun.Requested(cl) ? DistributedRun.Run(m, d, s, args, env) : Train(new TrainingRun(m, d, s, s.Out!, Console.WriteLine), m, d, s);
        if (!outExisted && Directory.Exists(s.Out) && !Directory.EnumerateFileSystemEntries(s.Out!).Any()) Directory.Delete(s.Out!);
        return code;
    }

    /// <summary>One device, in this process.</summary>
    private static int Train(TrainingRun job, ModelSpec model, RunDescription description, RunSettings settings)
    {
        var stop = NewStop(settings);
        using var signals = new StopSignals(stop);
        try
        {
            job.Prepare();
            job.RunSingleDevice(stop);
            return StopSignals.ExitCode(job.Stopped);
        }
        catch (Exception e) when (e is NativeLoadException or FileNotFoundException or ArgumentException) { return UserError(e.Message); }
        catch (Exception e) when (e is InvalidDataException or NonFiniteException) { return UserError(e.Message + job.Kept); }
        catch (Exception e) when (AllocationFailure.Is(e))
        {
            return UserError(OutOfMemory.Sentence(model, description, settings.Device, rank: null) + job.Kept);
        }
        catch (Exception e) when (NondeterministicOperation.Is(e)) { return UserError(NondeterministicOperation.Sentence(e) + job.Kept); }
    }

    /// <summary>What stops a run early: the signals, and --exit-duration-in-mins counted from now (Megatron counts from the
    /// program's start, a few seconds earlier).</summary>
    internal static RunStop NewStop(RunSettings settings) =>
        new(settings.ExitDurationInMins is int minutes ? TimeSpan.FromMinutes(minutes) : null);

    internal static int UserError(string message)
    {
        Console.Error.WriteLine($"harness run: {message}");
        return 2;
    }
}
