using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// Gradient synchronization over the data-parallel group (data x context ranks: both hold the same weights) once per
/// step, for <c>parameters</c> parameters of one rank. Gradients travel in the main gradients' dtype
/// (<see cref="GradientBytesPerParameter"/>: fp32 unless bf16 or fp16 main gradients, as Megatron-FSDP keeps by default).
/// Replicated optimizer: one all-reduce after the last micro-batch's backward. Distributed optimizer (ZeRO 1):
/// reduce-scatter of the gradients, then, after the step, all-gather of the updated bf16 weights. ZeRO 2 and 3
/// reduce every micro-batch's gradients instead (<see cref="ZeroMicroBatchComm"/>); ZeRO 2 gathers the updated
/// weights after the step as ZeRO 1 does, ZeRO 3 in the next forward.
/// </summary>
public static class DataParallelComm
{
    /// <summary>Bytes per parameter of the gradients as they are accumulated and reduced: fp32 with
    /// --accumulate-allreduce-grads-in-fp32 (forced with bf16) or in fp32 training, else fp16.</summary>
    public static double GradientBytesPerParameter(RunDescription c) => c.GradientsInFp32 || c.Precision == Precision.Fp32 ? 4 : 2;

    /// <summary>Seconds to reduce the gradients of <paramref name="parameters"/> parameters after the step's last
    /// backward (can overlap it); none for ZeRO 2 and 3, which reduce every micro-batch.</summary>
    public static double GradientReduce(double parameters, RunDescription c, ClusterSpec cluster)
    {
        if (c.ZeroStage >= 2) return 0;
        var g = Topology.DataWithContextGroup(c, cluster.GpusPerNode);
        double bytes = GradientBytesPerParameter(c) * parameters;
        return c.ZeroStage >= 1
            ? Collectives.ReduceScatter(bytes, g, cluster.Gpu)
            : Collectives.AllReduce(bytes, g, cluster.Gpu);
    }

    /// <summary>Seconds to all-gather updated weights after the optimizer step (ZeRO 1 and 2; under Megatron-FSDP version
    /// 1's optim_grads_params the embeddings, final norm and output layer, which it keeps gathered through the step: the
    /// caller passes those parameters).</summary>
    /// <param name="forwardSeconds">One micro-batch's forward through this rank's layers: with --overlap-param-gather
    /// (Megatron's param_and_grad_buffer: each bucket's all-gather is launched as the forward reaches the bucket before it)
    /// the step's gather hides behind it, except the first bucket's, which the forward waits for.</param>
    public static double ParameterGather(double parameters, RunDescription c, ClusterSpec cluster, double forwardSeconds)
    {
        if (c.ZeroStage < 1 || (c.ZeroStage >= 3 && !c.KeepsEndsGathered)) return 0;
        var g = Topology.DataWithContextGroup(c, cluster.GpusPerNode);
        double gather = Collectives.AllGather(parameters * Activations.BytesPerElement(c.Precision), g, cluster.Gpu);
        if (!c.OverlapOrDefault.ParamGather) return gather;
        double buckets = Math.Max(1, Math.Ceiling(parameters / BucketSize(c)));
        return Math.Max(gather / buckets, gather - forwardSeconds);
    }

    /// <summary>Elements per gradient bucket: --ddp-bucket-size, else Megatron's max(40M, 1M x data-parallel size)
    /// (megatron/core/distributed/distributed_data_parallel.py), the data-parallel group holding the context ranks too.
    /// The executor cuts its buckets (GradBucket) by the same rule.</summary>
    public static long BucketSize(RunDescription c) => c.DdpBucketSize ?? Math.Max(40_000_000L, 1_000_000L * c.DataParallel * c.ContextParallel);
}
