using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Cli.Output;

/// <summary>
/// The command lines that take one of `harness search`'s configurations further: `harness simulate` of it (the search's
/// model and cluster flags as the user wrote them, then the configuration), and `harness run` of it on the GPUs it was
/// searched for (the model flags, the GPU preset, the configuration; its ranks on one node, or under Slurm's srun on as many
/// nodes as it fills, which `harness run` reads as its launch).
/// </summary>
public static class ConfigurationCommands
{
    public static string Simulate(IReadOnlyList<string> searchArgs, RunDescription config)
    {
        var words = new List<string> { "harness", "simulate" };
        words.AddRange(Kept(searchArgs, ModelFlags.Flags.Concat(ClusterFlags.Flags)));
        words.AddRange(RunDescriptionFlags.Format(config));
        return string.Join(' ', words);
    }

    public static string Run(IReadOnlyList<string> searchArgs, ClusterSpec cluster, RunDescription config)
    {
        int world = config.WorldSize, perNode = Math.Min(world, cluster.GpusPerNode);
        var words = new List<string>();
        if (world > perNode)
            words.AddRange(["srun", "--nodes", (world / perNode).ToString(), "--ntasks-per-node", perNode.ToString()]);
        words.AddRange(["harness", "run"]);
        words.AddRange(Kept(searchArgs, ModelFlags.Flags));
        words.AddRange(["--gpu", cluster.Gpu.Name]);
        words.AddRange(RunDescriptionFlags.Format(config));
        words.AddRange(["--device", "cuda"]);
        if (world == perNode) words.AddRange(["--nproc-per-node", world.ToString()]);
        return string.Join(' ', words);
    }

    /// <summary>The words of <paramref name="args"/> that are one of <paramref name="flags"/>, with their values.</summary>
    private static IEnumerable<string> Kept(IReadOnlyList<string> args, IEnumerable<Flag> flags)
    {
        var known = flags.ToDictionary(f => f.Name);
        for (int i = 0; i < args.Count; i++)
        {
            string name = args[i].Split('=')[0];
            if (!known.TryGetValue(name, out var flag)) continue;
            yield return args[i];
            if (flag.TakesValue && !args[i].Contains('=') && i + 1 < args.Count) yield return args[++i];
        }
    }
}
