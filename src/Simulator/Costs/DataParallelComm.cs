using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// Gradient synchronization over the data-parallel group (data x context ranks: both hold the same
/// weights), for <c>parameters</c> parameters of one rank. Gradients travel in fp32 (Megatron's main
/// gradients). Replicated optimizer: one all-reduce. Distributed optimizer (ZeRO 1/2): reduce-scatter of the
/// gradients, then, after the step, all-gather of the updated bf16 weights. ZeRO 3 gathers the weights again
/// for forward and for backward.
/// </summary>
public static class DataParallelComm
{
    /// <summary>Seconds to reduce the gradients of <paramref name="parameters"/> parameters (can overlap backward).</summary>
    public static double GradientReduce(double parameters, RunDescription c, ClusterSpec cluster)
    {
        var g = Topology.DataWithContextGroup(c, cluster.GpusPerNode);
        double bytes = (c.GradientsInFp32 || c.Precision == Precision.Fp32 ? 4 : 2) * parameters;
        return c.ZeroStage >= 1
            ? Collectives.ReduceScatter(bytes, g, cluster.Gpu)
            : Collectives.AllReduce(bytes, g, cluster.Gpu);
    }

    /// <summary>Seconds to all-gather updated weights after the optimizer step (distributed optimizer), plus
    /// ZeRO 3's two further gathers per step.</summary>
    public static double ParameterGather(double parameters, RunDescription c, ClusterSpec cluster)
    {
        if (c.ZeroStage < 1) return 0;
        var g = Topology.DataWithContextGroup(c, cluster.GpusPerNode);
        double gather = Collectives.AllGather(parameters * Activations.BytesPerElement(c.Precision), g, cluster.Gpu);
        return c.ZeroStage >= 3 ? 3 * gather : gather;
    }
}
