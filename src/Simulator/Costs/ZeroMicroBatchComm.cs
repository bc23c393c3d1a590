using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>Seconds of one micro-batch's ZeRO collectives for a group of parameters: <see cref="Gather"/> all-gathers
/// their weights once (ZeRO 3 does it before the forward and again before the backward), <see cref="ReduceScatter"/>
/// reduces their gradients into each owner's partition (after the backward).</summary>
public readonly record struct ZeroCollectives(double Gather, double ReduceScatter)
{
    public double Forward => Gather;
    public double Backward => Gather + ReduceScatter;
}

/// <summary>Seconds of a micro-batch's ZeRO collectives that compute does not cover, in its forward and its backward.</summary>
public readonly record struct ZeroExposure(double Forward, double Backward);

/// <summary>
/// ZeRO stages 2 and 3 (Rajbhandari et al. 2020, arXiv 1910.02054) as DeepSpeed runs them, where the data-parallel
/// collectives come with every micro-batch rather than once per step (at DeepSpeed edaa722), and Megatron-FSDP's
/// optim_grads and optim_grads_params alike, one transformer layer at a time (<see cref="MegatronFsdp"/>):
/// <list type="bullet">
/// <item>Stage 2 (deepspeed/runtime/zero/stage_1_and_2.py, partition_grads): each micro-batch's backward copies the
/// gradients into a reduce bucket of reduce_bucket_size elements (5e8 by default, zero/config.py) and reduces a bucket into
/// the owning ranks' partitions whenever it is full, the last one in the backward's epilogue; under overlap_comm on a side
/// stream beside the rest of the backward, else on the compute stream. Gradient accumulation then keeps only the 1/d
/// partition. The updated weights are all-gathered after the step, as in stage 1
/// (<see cref="DataParallelComm.ParameterGather"/>).</item>
/// <item>Stage 3 (zero/stage3.py, zero/partitioned_param_coordinator.py): parameters partitioned too. Each layer's weights
/// are all-gathered before its forward and again before its backward and released after use; the coordinator prefetches
/// what the next modules need (stage3_prefetch_bucket_size, 5e7 elements, at least one whole parameter) on its own stream,
/// so a layer's gather runs beside the previous layer's compute. Gradients are reduce-scattered per micro-batch as in
/// stage 2. No gather after the step: the next forward's gathers carry the updated shards.</item>
/// </list>
/// Messages: weights in the parameter dtype, gradients in the run's gradient dtype
/// (<see cref="DataParallelComm.GradientBytesPerParameter"/>: fp32 unless fp16 without
/// --accumulate-allreduce-grads-in-fp32), collectives over the data x context group (<see cref="Collectives"/>). DeepSpeed's
/// own bf16 default communicates bf16 gradients (runtime/engine.py, communication_data_type): stage 3 reduce-scatters
/// them, half these bytes; stage 2 since #4695 (use_multi_rank_bucket_allreduce, on by default) all-reduces each bucket,
/// on a ring the bytes of the fp32 reduce-scatter charged here.
/// </summary>
public static class ZeroMicroBatchComm
{
    /// <summary>DeepSpeed's reduce_bucket_size default, elements (deepspeed/runtime/zero/config.py).</summary>
    public const double DeepSpeedReduceBucketSize = 5e8;

    /// <summary>Elements per gradient reduce bucket: --ddp-bucket-size where given, else DeepSpeed's default.</summary>
    public static double ReduceBucketSize(RunDescription c) => c.DdpBucketSize ?? DeepSpeedReduceBucketSize;

    /// <summary>Bytes of one all-gather of <paramref name="parameters"/> parameters' weights (ZeRO 3), 0 below stage 3.</summary>
    public static double GatherBytes(double parameters, RunDescription c) =>
        c.ZeroStage >= 3 ? parameters * Activations.BytesPerElement(c.Precision) : 0;

    /// <summary>Bytes of one micro-batch's gradient reduce-scatter (ZeRO 2 and 3), 0 below stage 2.</summary>
    public static double ReduceScatterBytes(double parameters, RunDescription c) =>
        c.ZeroStage >= 2 ? parameters * DataParallelComm.GradientBytesPerParameter(c) : 0;

    /// <summary>Reduce-scatters <paramref name="parameters"/> parameters' gradients in <paramref name="layers"/> layers come
    /// in: one per layer under Megatron-FSDP (a layer is its communication unit), else one per reduce bucket they fill.</summary>
    public static double Buckets(double parameters, int layers, RunDescription c) =>
        c.ShardsPerLayer ? Math.Max(1, layers) : Math.Max(1, Math.Ceiling(parameters / ReduceBucketSize(c)));

    /// <summary>One micro-batch's collectives for <paramref name="parameters"/> parameters of one rank.</summary>
    public static ZeroCollectives Collectives(double parameters, RunDescription c, ClusterSpec cluster)
    {
        var g = Topology.DataWithContextGroup(c, cluster.GpusPerNode);
        return new ZeroCollectives(Costs.Collectives.AllGather(GatherBytes(parameters, c), g, cluster.Gpu),
                                   Costs.Collectives.ReduceScatter(ReduceScatterBytes(parameters, c), g, cluster.Gpu));
    }

    /// <summary>One micro-batch's collectives for the embeddings or the final norm and output layer: as for layers, except
    /// that Megatron-FSDP version 1 gathers these once a step and keeps them (<see cref="MegatronFsdp.GathersEndsEveryMicroBatch"/>;
    /// <see cref="DataParallelComm.ParameterGather"/> costs that gather).</summary>
    public static ZeroCollectives EndCollectives(double parameters, RunDescription c, ClusterSpec cluster) =>
        c.KeepsEndsGathered ? Collectives(parameters, c, cluster) with { Gather = 0 } : Collectives(parameters, c, cluster);

    /// <summary>
    /// What of <paramref name="comm"/> sticks out of a forward of <paramref name="forward"/> and a backward of
    /// <paramref name="backward"/> seconds through <paramref name="layers"/> layers whose gradients fill
    /// <paramref name="buckets"/> reduce buckets. The gathers run one layer ahead: the first layer's gather is waited for,
    /// the others hide behind the previous layer's compute (<see cref="Pipelined"/> with one piece per layer), in the
    /// backward as in the forward. The reduce-scatters run one bucket
    /// behind when <paramref name="overlapReduce"/> (DeepSpeed's overlap_comm, our --overlap-grad-reduce): the last bucket
    /// waits for the backward's end (one piece per bucket), else they run on the compute stream, all exposed. In the
    /// backward both share the links, so together they hide behind at most the whole backward.
    /// </summary>
    public static ZeroExposure Exposed(ZeroCollectives comm, double forward, double backward, double layers, double buckets,
        bool overlapReduce)
    {
        double gather = Pipelined(comm.Gather, backward, layers);
        double reduce = overlapReduce ? Pipelined(comm.ReduceScatter, backward, buckets) : comm.ReduceScatter;
        double backwardExposed = overlapReduce ? Math.Max(gather + reduce, comm.Backward - backward) : gather + reduce;
        return new ZeroExposure(Pipelined(comm.Gather, forward, layers), backwardExposed);
    }

    /// <summary>
    /// Seconds <paramref name="comm"/> adds beside <paramref name="compute"/> when both come in <paramref name="pieces"/>
    /// equal pieces and each piece of one waits for the matching piece of the other (a two-stage flow shop): one piece of
    /// communication cannot hide, and the rest hides behind all compute but one piece:
    /// max(comm/n, comm − compute·(n − 1)/n).
    /// </summary>
    public static double Pipelined(double comm, double compute, double pieces)
    {
        if (comm <= 0) return 0;
        double n = Math.Max(1, pieces);
        return Math.Max(comm / n, comm - compute * (n - 1) / n);
    }
}
