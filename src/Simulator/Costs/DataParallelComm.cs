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
    /// <param name="forwardSeconds">One micro-batch's forward through this rank's layers: with --overlap-param-gather
    /// (Megatron's param_and_grad_buffer: each bucket's all-gather is launched as the forward reaches the bucket before it)
    /// the step's gather hides behind it, except the first bucket's, which the forward waits for.</param>
    public static double ParameterGather(double parameters, RunDescription c, ClusterSpec cluster, double forwardSeconds)
    {
        if (c.ZeroStage < 1) return 0;
        var g = Topology.DataWithContextGroup(c, cluster.GpusPerNode);
        double gather = Collectives.AllGather(parameters * Activations.BytesPerElement(c.Precision), g, cluster.Gpu);
        if (c.OverlapOrDefault.ParamGather)
        {
            double buckets = Math.Max(1, Math.Ceiling(parameters / BucketSize(c)));
            gather = Math.Max(gather / buckets, gather - forwardSeconds);
        }
        return c.ZeroStage >= 3 ? gather + 2 * Collectives.AllGather(parameters * Activations.BytesPerElement(c.Precision), g, cluster.Gpu) : gather;
    }

    /// <summary>Elements per gradient bucket: --ddp-bucket-size, else Megatron's max(40M, 1M x data-parallel size)
    /// (megatron/core/distributed/distributed_data_parallel.py), the data-parallel group holding the context ranks too.
    /// The executor cuts its buckets (GradBucket) by the same rule.</summary>
    public static long BucketSize(RunDescription c) => c.DdpBucketSize ?? Math.Max(40_000_000L, 1_000_000L * c.DataParallel * c.ContextParallel);
}
