using Harness.Simulator.Specs;

namespace Harness.Megatron;

/// <summary>A model, a cluster and a run description read from one command line.</summary>
public sealed record SimulationInput(ModelSpec Model, ClusterSpec Cluster, RunDescription Config);

/// <summary>
/// Reads the model, cluster and run-description flags together, the way `harness simulate` takes them: <see cref="Flags"/> lists them all (add a command's own flags when parsing), <see cref="Read"/> returns
/// the input or null with every reason in <see cref="CommandLine.Errors"/>.
/// </summary>
public static class SimulationFlags
{
    public static IEnumerable<Flag> Flags =>
        ModelFlags.Flags.Concat(ClusterFlags.Flags).Concat(RunDescriptionFlags.Flags);

    public static SimulationInput? Read(CommandLine cl)
    {
        var model = ModelFlags.Read(cl);
        var cluster = ClusterFlags.Read(cl);
        if (model is null || cluster is null) return null;
        var config = RunDescriptionFlags.Read(cl, cluster.WorldSize);
        // Sizes whose product exceeds the GPUs are reported already; checked against the model they would only add echoes of
        // that one mistake (a tensor size above the world's is also above the heads).
        if ((long)config.TensorParallel * config.PipelineParallel * config.ContextParallel > cluster.WorldSize) return null;
        // A world size that does not divide is reported already; validate the rest against the layout's own size
        // (unless a size below 1 made it empty: that is reported as the size itself, not as an empty cluster).
        var validateOn = config.WorldSize == cluster.WorldSize || config.WorldSize < 1 ? cluster : cluster with { WorldSize = config.WorldSize };
        cl.Errors.AddRange(Harness.Simulator.Estimator.Validate(model, validateOn, config));
        return cl.Errors.Count == 0 ? new SimulationInput(model, cluster, config) : null;
    }
}
