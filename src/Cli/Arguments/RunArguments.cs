using System.Globalization;
using Harness.Executor.Training;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Cli.Arguments;

/// <summary>
/// `harness run`'s flags, read by the codec into the three records a run is: the model, the <see cref="RunDescription"/>
/// and the <see cref="RunSettings"/>. Everything after <see cref="Read"/> uses only those. Without model flags the run is
/// the tiny default (<see cref="DefaultRun"/>), its own flags placed before the user's.
/// </summary>
public static class RunArguments
{
    public static IReadOnlyList<Flag> Flags { get; } =
        [.. ModelFlags.Flags, .. RunDescriptionFlags.Flags, .. RunSettingsFlags.Flags, new Flag("--help", false, "this help")];

    /// <summary>The command line with the default run's flags before it when it names no model (later flags win).</summary>
    public static string[] WithDefaults(string[] args)
    {
        var modelFlags = ModelFlags.Flags.Select(f => f.Name).ToHashSet();
        return args.Any(a => modelFlags.Contains(a.Split('=')[0])) ? args : [.. DefaultRun.Arguments, .. args];
    }

    /// <summary>
    /// The run the flags describe on <paramref name="launchedWorldSize"/> ranks (torchrun's or Slurm's WORLD_SIZE when a
    /// launcher started this process; else --nproc-per-node), or null with the reasons in <see cref="CommandLine.Errors"/>.
    /// </summary>
    public static (ModelSpec Model, RunDescription Description, RunSettings Settings)? Read(CommandLine cl, int? launchedWorldSize)
    {
        bool tiny = !cl.HasAny(ModelFlags.Flags);
        var model = tiny ? DefaultRun.Model : ModelFlags.Read(cl);
        var settings = RunSettingsFlags.Read(cl);
        var description = RunDescriptionFlags.Read(cl, launchedWorldSize ?? settings.NprocPerNode);
        settings = settings with
        {
            DataPath = settings.DataPath ?? (settings.MockData ? null : DefaultRun.DataPath),
            Out = settings.Out ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)),
        };
        return cl.Errors.Count > 0 || model is null ? null : (model, description, settings);
    }
}
