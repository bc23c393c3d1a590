namespace Harness.Simulator.Specs;

/// <summary>
/// Megatron-core's own sharded data parallelism, Megatron-FSDP (<c>--use-megatron-fsdp</c>;
/// megatron/core/distributed/fsdp/src/megatron_fsdp at NVIDIA/Megatron-LM d98e8a6), beside DeepSpeed's ZeRO. Its
/// <c>--data-parallel-sharding-strategy</c> is the run's <see cref="RunDescription.ZeroStage"/>: no_shard (0, plain data
/// parallelism), optim (1: fp32 main weights and Adam's states sharded), optim_grads (2: the main gradients too) and
/// optim_grads_params (3: the compute weights too; the command line's default), as megatron_fsdp.py's docstring sets them
/// beside ZeRO's stages. What differs from DeepSpeed's stages (param_and_grad_buffer.py, megatron_fsdp.py):
/// <list type="bullet">
/// <item>The communication unit is one transformer layer (fsdp_unit_modules): under optim_grads and optim_grads_params
/// each layer's gradients are reduce-scattered after every micro-batch's backward (grad_reduce_every_bprop), under
/// optim_grads_params each layer's weights are all-gathered before its forward and again before its backward and
/// released after each; the embedding, the final norm and the output layer are no unit: gathered once a step and kept.</item>
/// <item>The main gradients are kept and reduced in the parameters' dtype (--megatron-fsdp-main-grads-dtype auto;
/// --accumulate-allreduce-grads-in-fp32 is not read), so in bf16 half DeepSpeed's fp32 bytes.</item>
/// <item>The wrapper forces --overlap-grad-reduce under optim_grads and optim_grads_params and --overlap-param-gather under
/// optim_grads_params (megatron_fsdp.py, __init__).</item>
/// <item>Version 1 (the default) has no rule against pipeline parallelism: each model chunk is wrapped on its own
/// (training.py, get_model), so its collectives repeat per micro-batch on every stage; version 2 refuses tensor, pipeline
/// and context parallelism (mcore_fsdp_adapter.py, _validate_config).</item>
/// </list>
/// </summary>
/// <param name="Version">--megatron-fsdp-version: 1 (default) or 2.</param>
/// <param name="DoubleBuffer">--fsdp-double-buffer: gathered weights and unsharded gradients live in two fixed buffers each,
/// so at most two layers of each exist at once and no deeper prefetch runs.</param>
/// <param name="CommunicationUnitSize">--suggested-communication-unit-size, elements; null: megatron_fsdp.py's default
/// (<see cref="UnitSize"/>).</param>
public sealed record MegatronFsdp(int Version = 1, bool DoubleBuffer = false, long? CommunicationUnitSize = null)
{
    /// <summary>The strategies by stage, as --data-parallel-sharding-strategy spells them.</summary>
    public static readonly string[] Strategies = ["no_shard", "optim", "optim_grads", "optim_grads_params"];

    /// <summary>The command line's default strategy (megatron/training/arguments.py): optim_grads_params.</summary>
    public const int DefaultStage = 3;

    /// <summary>megatron_fsdp.py's floor under the suggested communication unit size when none is given: the code takes
    /// max(1e9, ...), so the all-gather prefetch window is at least 5e8 elements and the reduce-scatter queue 1e9.</summary>
    public const double DefaultUnitSizeFloor = 1e9;

    public static string StrategyName(int stage) => Strategies[Math.Clamp(stage, 0, 3)];

    /// <summary>The suggested communication unit size, elements: as given, else max(1e9, 2 x the mean layer's parameters)
    /// under optim_grads_params and 1e9 otherwise (megatron_fsdp.py sets the unit from --ddp-bucket-size where given, but
    /// takes the larger of it and 1e9).</summary>
    public double UnitSize(double layerParameters, int stage, long? ddpBucketSize) => CommunicationUnitSize ?? Math.Max(
        DefaultUnitSizeFloor, stage >= 3 ? 2 * layerParameters : ddpBucketSize ?? DefaultUnitSizeFloor);

    /// <summary>
    /// Layers whose full weights are resident at once under optim_grads_params: the one computing and those prefetched
    /// behind it. The prefetch keeps adding the next layer while less than half the unit size is prefetched
    /// (param_and_grad_buffer.py, all_gather_params; suggested_AG_prefetch_size), so ceil(half / layer) layers ride ahead;
    /// with the double buffer two in all. Never more than the chunk's <paramref name="layers"/>.
    /// </summary>
    public double GatheredLayers(double layerParameters, int layers, long? ddpBucketSize)
    {
        if (layers <= 0 || layerParameters <= 0) return 0;
        // Version 2 prefetches exactly one module ahead (experimental/module.py, pre_forward and pre_backward).
        double ahead = DoubleBuffer || Version == 2 ? 1 : Math.Ceiling(UnitSize(layerParameters, 3, ddpBucketSize) / 2 / layerParameters);
        return Math.Min(layers, 1 + ahead);
    }

    /// <summary>Whether the embedding, final norm and output layer are gathered with every micro-batch's forward and backward
    /// (version 2's root module, unsharded for each pass) rather than once a step and kept (version 1's non-unit modules,
    /// param_and_grad_buffer.py, reset with preserve_non_fsdp_units).</summary>
    public bool GathersEndsEveryMicroBatch => Version == 2;

    /// <summary>Layers whose unsharded gradients exist at once under optim_grads and optim_grads_params: the one backward is
    /// filling and the one being reduce-scattered on the side stream. The queue (suggested_RS_queue_capacity) would admit
    /// more only where the reduce-scatters fall behind the backward; the double buffer's two pools hold exactly these two.</summary>
    public static double ReducingLayers(int layers) => Math.Min(2, Math.Max(0, layers));

    /// <summary>Every reason this Megatron-FSDP setting cannot run <paramref name="run"/>, in Megatron's words.</summary>
    public IEnumerable<string> Validate(RunDescription run)
    {
        if (Version is not (1 or 2))
            yield return $"--megatron-fsdp-version {Version} is not one of 1, 2.";
        if (CommunicationUnitSize is < 1)
            yield return $"--suggested-communication-unit-size {CommunicationUnitSize} must be at least 1 (elements).";
        if (run.OffloadRatio > 0)
            yield return "--offload-ratio is Megatron-Kwai's activation offload, a fork without Megatron-FSDP; pass one of --offload-ratio and --use-megatron-fsdp.";
        if (run.AdamOrDefault.PrecisionAware)
            yield return "--use-precision-aware-optimizer under --use-megatron-fsdp is not modelled (Megatron-FSDP keeps the optimizer's states on its own main-weight buffer); pass one.";
        if (Version != 2) yield break;
        // mcore_fsdp_adapter.py, FullyShardedDataParallelV2._validate_config; arguments.py asserts v2 without the distributed optimizer.
        if (run.ZeroStage != 3)
            yield return $"--megatron-fsdp-version 2 runs only --data-parallel-sharding-strategy optim_grads_params, not {StrategyName(run.ZeroStage)}.";
        if (run.TensorParallel > 1 || run.PipelineParallel > 1 || run.ContextParallel > 1)
            yield return $"--megatron-fsdp-version 2 refuses tensor, pipeline and context parallelism (t {run.TensorParallel}, p {run.PipelineParallel}, c {run.ContextParallel}); use version 1 or sizes of 1.";
        if (run.GradientAccumulationFusion)
            yield return "--megatron-fsdp-version 2 refuses gradient-accumulation fusion; pass --no-gradient-accumulation-fusion.";
        // Version 2 reads no double buffer (its two modules at most are its own rule) and refuses a unit size.
        if (CommunicationUnitSize is not null)
            yield return "--megatron-fsdp-version 2 refuses --suggested-communication-unit-size.";
    }
}
