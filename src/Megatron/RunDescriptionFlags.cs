using System.Globalization;
using Harness.Simulator.Specs;

namespace Harness.Megatron;

/// <summary>
/// The <see cref="RunDescription"/> by Megatron-LM's (and Megatron-Kwai's) argument names, plus Harness's own where Megatron
/// has none: <c>--offload-ratio</c> (= Kwai's alpha), <c>--sync-factor</c> (CAAT-Net's p), <c>--zero-stage</c>, <c>--fp32</c>,
/// <c>--no-norm-fusion</c>, <c>--no-fused-kernels</c>, and the launch environment's <c>--cuda-device-max-connections</c>,
/// <c>--max-split-size-mb</c> and <c>--expandable-segments</c>. Every default is the record's own (<c>new RunDescription()</c>), which is Megatron-LM's
/// (megatron/training/arguments.py): fp32 unless <c>--bf16</c> or <c>--fp16</c>, as in Megatron.
/// The data-parallel size is the world size over tensor x pipeline x context, as in Megatron.
/// </summary>
public static class RunDescriptionFlags
{
    public static readonly Flag ContextParallelNoOverlap = new("--no-context-parallel-comm-overlap-gemm", false,
        "Megatron-Kwai: the context-parallel K/V all-gather and its gradients' reduce-scatter on the critical path (its scripts pass it for grouped-query attention)");

    public static readonly Flag DeviceMaxConnections = new("--cuda-device-max-connections", true,
        "the launch's CUDA_DEVICE_MAX_CONNECTIONS, 1-32 (default: 1 with tensor parallelism, as Megatron-LM requires; else 8); under 1, p2p cannot overlap");

    public static readonly Flag HierarchicalSizes = new("--hierarchical-context-parallel-sizes", true,
        "a2a+p2p: the all-to-all and the ring level's sizes, e.g. 8 2 (their product is c)", TakesList: true);

    public static readonly Flag MaxSplitSize = new("--max-split-size-mb", true,
        "the launch's PYTORCH_CUDA_ALLOC_CONF max_split_size_mb (above 20; default: none)");

    public static readonly Flag ExpandableSegments = new("--expandable-segments", false,
        "the launch's PYTORCH_CUDA_ALLOC_CONF expandable_segments:True (NeMo's performance scripts set it): no fragmentation of the step's allocations");

    /// <summary>The layout, recomputation, offload and optimizer sharding: what `harness search` varies (it takes lists of them).</summary>
    public static readonly Flag[] LayoutFlags =
    {
        new("--tensor-model-parallel-size", true, "tensor-parallel size t"),
        new("--pipeline-model-parallel-size", true, "pipeline-parallel size p"),
        new("--num-layers-per-virtual-pipeline-stage", true, "layers per virtual stage (interleaved 1F1B)"),
        new("--decoder-first-pipeline-num-layers", true, "layers on the first pipeline stage (default: an even split); the middle stages split the rest evenly"),
        new("--decoder-last-pipeline-num-layers", true, "layers on the last pipeline stage (default: an even split)"),
        new("--account-for-embedding-in-pipeline-split", false, "count the embedding as a layer in the pipeline split: the first model chunk holds one layer fewer"),
        new("--account-for-loss-in-pipeline-split", false, "count the loss as a layer in the pipeline split: the last model chunk holds one layer fewer"),
        new("--context-parallel-size", true, "context-parallel size c"),
        new("--cp-comm-type", true, "context-parallel exchange: p2p (ring attention, default), allgather (all_gather), a2a (DeepSpeed-Ulysses) or a2a+p2p"),
        HierarchicalSizes,
        new("--sequence-parallel", false, "sequence parallelism (needs t > 1)"),
        new("--micro-batch-size", true, "micro-batch size b (default 1)"),
        new("--global-batch-size", true, "global batch size (default: micro-batch x data-parallel size)"),
        new("--recompute-granularity", true, "full or selective"),
        new("--recompute-method", true, "uniform or block (full recomputation; default uniform)"),
        new("--recompute-num-layers", true, "layers per recomputed group (uniform) or recomputed per chunk (block); default 1"),
        new("--offload-ratio", true, "activation offload ratio alpha in [0, 1] (Megatron-Kwai's --kaimm-offload-activation-ratio)"),
        new("--zero-stage", true, "ZeRO stage 0-3 (1 = --use-distributed-optimizer)"),
        new("--sync-factor", true, "CAAT-Net partial synchronization p in [0, 1] (default 1)"),
        new("--recompute-activations", false, "selective recomputation (older Megatron flag)"),
        new("--kaimm-recompute-norm", false, "Megatron-Kwai: recompute the norm outputs"),
        new("--kaimm-recompute-mlp-activation-func", false, "Megatron-Kwai: recompute the SwiGLU output"),
        new("--kaimm-offload-activation-ratio", true, "Megatron-Kwai: offload ratio alpha"),
        new("--use-distributed-optimizer", false, "Megatron's distributed optimizer (ZeRO stage 1)"),
        new(ShardingStrategy, true, "with --use-megatron-fsdp: no_shard, optim, optim_grads or optim_grads_params (the default; ZeRO stages 0-3 as Megatron-FSDP runs them)"),
    };

    /// <summary>Megatron-FSDP's sharding strategy, the stage of its sharding (<see cref="MegatronFsdp"/>).</summary>
    public const string ShardingStrategy = "--data-parallel-sharding-strategy";

    /// <summary>Megatron-FSDP's switch and the flags that apply only with it.</summary>
    public const string UseMegatronFsdp = "--use-megatron-fsdp";

    private static readonly string[] FsdpOnlyFlags =
    [
        ShardingStrategy, "--megatron-fsdp-version", "--fsdp-double-buffer", "--suggested-communication-unit-size",
        "--megatron-fsdp-main-grads-dtype", "--megatron-fsdp-grad-comm-dtype", "--megatron-fsdp-main-params-dtype",
    ];

    /// <summary>The rest: the implementation a layout runs on (precision, kernels, overlaps, the launch environment); `harness
    /// search` applies them to every configuration.</summary>
    public static readonly Flag[] ImplementationFlags =
    {
        new("--bf16", false, "bf16 mixed precision"),
        new("--fp16", false, "fp16 mixed precision"),
        new("--fp32", false, "fp32 training (the default, as in Megatron; the flag only says so)"),
        new("--attention-backend", true, "flash (default), fused (cuDNN), unfused, local (Megatron-core's own unfused) or auto (Transformer Engine's choice per GPU)"),
        new("--use-flash-attn", false, "older Megatron's flag for --attention-backend flash"),
        new("--overlap-grad-reduce", false, "reduce gradient buckets during backward (off by default, as in Megatron)"),
        new("--overlap-param-gather", false, "all-gather each bucket's updated weights during the next forward (with the distributed optimizer)"),
        new("--ddp-bucket-size", true, "elements per data-parallel gradient bucket (default max(40M, 1M x data-parallel size))"),
        new("--tp-comm-overlap", false, "overlap tensor-parallel communication with GEMMs (Transformer Engine userbuffers)"),
        new("--overlap-sp-ag", false, "Megatron-Kwai: overlap the sequence-parallel all-gathers with GEMMs (pass with --overlap-sp-rs)"),
        new("--overlap-sp-rs", false, "Megatron-Kwai: overlap backward's collectives too; the forward reduce-scatter stays on the compute stream"),
        ContextParallelNoOverlap,
        new("--no-overlap-p2p-communication", false, "pipeline sends block the sender (Megatron overlaps them by default)"),
        new("--overlap-p2p-communication", false, "older Megatron's switch for the default (Megatron-Kwai's scripts pass it)"),
        DeviceMaxConnections,
        MaxSplitSize,
        ExpandableSegments,
        new("--no-scatter-gather-tensors-in-pipeline", false,
            "every tensor-parallel rank sends the whole activation to the next stage (Megatron-LM 2021-2026's switch; DeepSpeed's pipeline engine)"),
        new("--cpu-offloading", false, "Megatron-core: offload the first --cpu-offloading-num-layers layers' activations to host memory"),
        new("--cpu-offloading-num-layers", true, "Megatron-core: layers whose activations go to host memory during forward (turns on --cpu-offloading)"),
        new("--no-async-tensor-model-parallel-allreduce", false,
            "run the column-parallel input-gradient all-reduce on the compute stream (Megatron-LM 2019-2021)"),
        new("--accumulate-allreduce-grads-in-fp32", false,
            "keep and reduce gradients in fp32 (always with bf16 and fp32; with --fp16 gradients are fp16 without it)"),
        new("--grad-reduce-in-bf16", false, "keep and reduce the main gradients in bf16 (2 B each instead of 4)"),
        new("--use-precision-aware-optimizer", false, "Transformer Engine's FusedAdam keeps the optimizer states in the dtypes below (fp32 masters as 16-bit remainders beside bf16 weights)"),
        new("--main-grads-dtype", true, "fp32 or bf16: the main gradients' dtype (bf16: as --grad-reduce-in-bf16)"),
        new("--main-params-dtype", true, "fp32 or fp16: the master weights' dtype with the precision-aware optimizer"),
        new("--exp-avg-dtype", true, "fp32, fp16, bf16 or fp8: Adam's first moment with the precision-aware optimizer"),
        new("--exp-avg-sq-dtype", true, "fp32, fp16, bf16 or fp8: Adam's second moment with the precision-aware optimizer"),
        new("--no-masked-softmax-fusion", false, "unfused scale-mask-softmax (pass with the two below: Megatron-LM 2019)"),
        new("--no-bias-gelu-fusion", false, "unfused bias + GeLU"),
        new("--no-bias-dropout-fusion", false, "unfused bias + dropout + residual add"),
        new("--no-gradient-accumulation-fusion", false,
            "add each micro-batch's weight gradients to the main gradients in a separate kernel (Megatron-LM before late 2021)"),
        new("--no-bias-swiglu-fusion", false, "SwiGLU as torch.chunk, silu and a product, which keep SiLU's output too (Megatron-LM through 2023)"),
        new("--no-norm-fusion", false, "LayerNorm/RMSNorm as unfused fp32 PyTorch ops (Megatron-LM's legacy RMSNorm, early 2024)"),
        new("--optimizer", true, "adam (Megatron's default) or sgd (momentum SGD: 8 B of optimizer state per parameter, not Adam's 12)"),
        new("--sgd-momentum", true, "SGD's momentum factor in [0, 1) (default 0.9); 0 keeps no momentum buffer"),
        new(UseMegatronFsdp, false, "Megatron-core's own sharded data parallelism (Megatron-FSDP) in place of the distributed optimizer and DeepSpeed's ZeRO stages; its stage is --data-parallel-sharding-strategy"),
        new("--megatron-fsdp-version", true, "1 (default; every layout) or 2 (optim_grads_params without tensor, pipeline or context parallelism)"),
        new("--fsdp-double-buffer", false, "Megatron-FSDP: gathered weights and unsharded gradients in two fixed buffers each (no deeper prefetch)"),
        new("--suggested-communication-unit-size", true, "Megatron-FSDP: elements per communication unit; half of it is the all-gather prefetch window (default max(1e9, 2 x a layer) under optim_grads_params)"),
        new("--megatron-fsdp-main-grads-dtype", true, "Megatron-FSDP: auto (the parameters' dtype, the default), fp32 or bf16"),
        new("--megatron-fsdp-grad-comm-dtype", true, "Megatron-FSDP: auto (the main gradients' dtype, the default); another dtype is not modelled"),
        new("--megatron-fsdp-main-params-dtype", true, "Megatron-FSDP: fp32 (the default); another dtype is not modelled"),
        new("--transformer-impl", true, "transformer_engine (Megatron's default) or harness (this project's executor, whose fused kernels are costed; what a Harness run records)"),
        new("--no-fused-kernels", false, "the executor: libtorch's operators instead of Harness's fused SwiGLU, rotary, residual add + RMSNorm, cross-entropy and AdamW kernels"),
        new("--no-fused-gpt-kernels", false, "the executor: libtorch's operators instead of Harness's fused residual add + LayerNorm and embedding + positions kernels (the GPT path's)"),
    };

    public static IEnumerable<Flag> Flags => LayoutFlags.Concat(ImplementationFlags);

    /// <summary>Megatron's spelling of its default --transformer-impl, and this project's executor's.</summary>
    private const string TransformerEngineImpl = "transformer_engine", HarnessImpl = "harness";

    /// <summary>Megatron's three element-wise fusion switches, which the simulator models together.</summary>
    private static readonly string[] ElementwiseFusions = ["--no-masked-softmax-fusion", "--no-bias-gelu-fusion", "--no-bias-dropout-fusion"];

    /// <summary>--cuda-device-max-connections, checked to be a number of hardware work queues CUDA accepts.</summary>
    public static int? ReadDeviceMaxConnections(CommandLine cl)
    {
        int? connections = cl.Int(DeviceMaxConnections.Name);
        if (connections is < 1 or > 32)
            cl.Errors.Add($"--cuda-device-max-connections {connections} is out of range; CUDA accepts 1 to 32 hardware work queues.");
        return connections;
    }

    /// <summary>The run description the flags give on <paramref name="worldSize"/> ranks. Problems go to
    /// <see cref="CommandLine.Errors"/>; the description is still returned (with data-parallel size 1 when the world size
    /// does not divide) so that its own <see cref="RunDescription.Validate"/> can add every further reason.</summary>
    public static RunDescription Read(CommandLine cl, int worldSize)
    {
        var d = new RunDescription();
        int t = cl.Int("--tensor-model-parallel-size") ?? d.TensorParallel;
        int p = cl.Int("--pipeline-model-parallel-size") ?? d.PipelineParallel;
        int cp = cl.Int("--context-parallel-size") ?? d.ContextParallel;
        int? l = cl.Int("--num-layers-per-virtual-pipeline-stage");
        int b = cl.Int("--micro-batch-size") ?? d.MicroBatch;
        int dp = 1;
        long divisor = (long)t * p * cp;
        // A world size below 1 is the caller's flag's mistake (--gpus, --nproc-per-node), reported there; a data-parallel
        // size derived from it would only echo it.
        if (worldSize >= 1 && divisor >= 1 && worldSize % divisor == 0) dp = (int)(worldSize / divisor);
        else if (worldSize >= 1 && divisor >= 1)
            cl.Errors.Add($"world size {worldSize} is not divisible by tensor {t} x pipeline {p} x context {cp} = {divisor}; choose sizes whose product divides the number of GPUs.");
        // A micro-batch below 1 is reported as such, and one whose default global batch passes int's range by Validate: the
        // default must echo neither as a second mistake.
        int gbs = cl.Int("--global-batch-size") ?? (int)Math.Min((long)Math.Max(b, 1) * dp, int.MaxValue);

        double? kwaiAlpha = cl.Double("--kaimm-offload-activation-ratio"), alpha = cl.Double("--offload-ratio");
        if (kwaiAlpha is double ka && alpha is double aa && ka != aa)
            cl.Errors.Add($"--offload-ratio {aa} and --kaimm-offload-activation-ratio {ka} disagree; pass one.");
        int zero = cl.Switch(UseMegatronFsdp) ? ReadShardingStrategy(cl) : cl.Int("--zero-stage") ?? (cl.Switch("--use-distributed-optimizer") ? 1 : d.ZeroStage);
        if (cl.Switch("--use-distributed-optimizer") && zero < 1 && !cl.Switch(UseMegatronFsdp))
            cl.Errors.Add($"--use-distributed-optimizer is ZeRO stage 1 and contradicts --zero-stage {zero}.");

        return ReadImplementation(cl, d with
        {
            DataParallel = dp, TensorParallel = t, PipelineParallel = p, LayersPerVirtualStage = l, ContextParallel = cp,
            ContextParallelComm = ReadContextParallelComm(cl) ?? d.ContextParallelComm,
            HierarchicalAllToAllSize = ReadHierarchicalSizes(cl, cp),
            LayersInFirstPipelineStage = cl.Int("--decoder-first-pipeline-num-layers"),
            LayersInLastPipelineStage = cl.Int("--decoder-last-pipeline-num-layers"),
            AccountForEmbeddingInPipelineSplit = cl.Switch("--account-for-embedding-in-pipeline-split"),
            AccountForLossInPipelineSplit = cl.Switch("--account-for-loss-in-pipeline-split"),
            SequenceParallel = cl.Switch("--sequence-parallel"), MicroBatch = b, GlobalBatch = gbs,
            Recompute = ReadRecompute(cl),
            OffloadRatio = alpha ?? kwaiAlpha ?? d.OffloadRatio, ZeroStage = zero,
            SyncFactor = cl.Double("--sync-factor") ?? d.SyncFactor,
        });
    }

    /// <summary>Megatron-FSDP's --data-parallel-sharding-strategy as its stage (the command line's default optim_grads_params);
    /// --zero-stage, DeepSpeed's, does not go with it.</summary>
    private static int ReadShardingStrategy(CommandLine cl)
    {
        if (cl.String("--zero-stage") is string z)
            cl.Errors.Add($"--zero-stage {z} is DeepSpeed's sharding; under {UseMegatronFsdp} pass {ShardingStrategy} ({string.Join(", ", MegatronFsdp.Strategies)}).");
        return cl.Choice(ShardingStrategy, MegatronFsdp.Strategies) is string s ? Array.IndexOf(MegatronFsdp.Strategies, s) : MegatronFsdp.DefaultStage;
    }

    /// <summary>Megatron-FSDP's settings (null without --use-megatron-fsdp, where its flags are refused) and whether its main
    /// gradients are fp32: --megatron-fsdp-main-grads-dtype, auto being the parameters' dtype (param_and_grad_buffer.py,
    /// _resolve_group_grad_dtype); Megatron-FSDP reads none of the distributed optimizer's gradient flags.</summary>
    private static (MegatronFsdp? Fsdp, bool GradientsInFp32) ReadFsdp(CommandLine cl, Precision precision)
    {
        bool Given(string flag) => cl.String(flag) is not null || cl.Switch(flag);
        if (!cl.Switch(UseMegatronFsdp))
        {
            foreach (var flag in FsdpOnlyFlags.Where(Given))
                cl.Errors.Add($"{flag} applies only with {UseMegatronFsdp}.");
            return (null, ReadGradientsInFp32(cl, precision));
        }
        foreach (var flag in new[] { "--accumulate-allreduce-grads-in-fp32", "--grad-reduce-in-bf16", "--main-grads-dtype" }.Where(Given))
            cl.Errors.Add($"{flag} is the distributed optimizer's; Megatron-FSDP does not read it: pass --megatron-fsdp-main-grads-dtype (auto, fp32 or bf16).");
        int version = cl.Int("--megatron-fsdp-version") ?? 1;
        if (version == 2 && cl.Switch("--use-distributed-optimizer"))
            cl.Errors.Add("--megatron-fsdp-version 2 is not compatible with --use-distributed-optimizer (Megatron asserts the same).");
        double? unit = cl.Double("--suggested-communication-unit-size");
        long? unitSize = unit is double u && u >= 1 && u == Math.Floor(u) && u <= long.MaxValue ? (long)u : null;
        if (unit is not null && unitSize is null)
            cl.Errors.Add($"--suggested-communication-unit-size {unit} is not a whole number of elements of at least 1.");
        string grads = cl.Choice("--megatron-fsdp-main-grads-dtype", "auto", "fp32", "bf16") ?? "auto";
        if (grads == "bf16" && precision != Precision.Bf16)
            cl.Errors.Add("--megatron-fsdp-main-grads-dtype bf16 needs --bf16.");
        bool fp32Grads = grads == "fp32" || precision == Precision.Fp32;
        string comm = cl.String("--megatron-fsdp-grad-comm-dtype") ?? "auto";
        if (!comm.Equals("auto", StringComparison.OrdinalIgnoreCase) && !comm.Equals(fp32Grads ? "fp32" : precision == Precision.Fp16 ? "fp16" : "bf16", StringComparison.OrdinalIgnoreCase))
            cl.Errors.Add($"--megatron-fsdp-grad-comm-dtype {comm} is not modelled: Harness reduces in the main gradients' dtype ({(fp32Grads ? "fp32" : "the parameters'")}); pass auto.");
        string main = cl.String("--megatron-fsdp-main-params-dtype") ?? "fp32";
        if (!main.Equals("fp32", StringComparison.OrdinalIgnoreCase))
            cl.Errors.Add($"--megatron-fsdp-main-params-dtype {main} is not modelled; pass fp32 (the default).");
        return (new MegatronFsdp(version, cl.Switch("--fsdp-double-buffer"), unitSize), fp32Grads);
    }

    /// <summary><paramref name="layout"/> on the implementation the <see cref="ImplementationFlags"/> describe.</summary>
    public static RunDescription ReadImplementation(CommandLine cl, RunDescription layout)
    {
        var d = new RunDescription();
        int precisions = (cl.Switch("--bf16") ? 1 : 0) + (cl.Switch("--fp16") ? 1 : 0) + (cl.Switch("--fp32") ? 1 : 0);
        if (precisions > 1) cl.Errors.Add("pass at most one of --bf16, --fp16, --fp32.");
        var precision = cl.Switch("--fp16") ? Precision.Fp16 : cl.Switch("--fp32") ? Precision.Fp32 : cl.Switch("--bf16") ? Precision.Bf16 : d.Precision;
        bool kwaiOverlap = cl.Switch("--overlap-sp-ag") || cl.Switch("--overlap-sp-rs");
        if (cl.Switch("--overlap-sp-ag") != cl.Switch("--overlap-sp-rs"))
            cl.Errors.Add("the simulator models Megatron-Kwai's --overlap-sp-ag and --overlap-sp-rs together (its launch scripts pass both); pass both or neither.");
        if (kwaiOverlap && cl.Switch("--tp-comm-overlap"))
            cl.Errors.Add("--tp-comm-overlap (Transformer Engine) and Megatron-Kwai's --overlap-sp-ag --overlap-sp-rs are different implementations; pass one.");
        int unfused = ElementwiseFusions.Count(cl.Switch);
        var attention = ReadAttentionBackend(cl) ?? d.AttentionBackend;
        // Under flash or cuDNN's fused attention the masked-softmax kernel never runs, so --no-masked-softmax-fusion alone
        // (common in Llama launch lines) changes nothing; otherwise the three switches are modelled together.
        bool softmaxOnly = unfused == 1 && cl.Switch(ElementwiseFusions[0]) && attention is AttentionBackend.Flash or AttentionBackend.Fused;
        if (unfused is > 0 and < 3 && !softmaxOnly)
            cl.Errors.Add($"the simulator models {string.Join(", ", ElementwiseFusions)} together (Megatron-LM 2019 had none of these fusions); pass all three or none.");
        int? maxSplit = cl.Int(MaxSplitSize.Name);
        if (cl.Switch("--overlap-p2p-communication") && cl.Switch("--no-overlap-p2p-communication"))
            cl.Errors.Add("--overlap-p2p-communication and --no-overlap-p2p-communication contradict each other.");
        var optimizer = cl.String("--optimizer") switch
        {
            null or "adam" => d.Optimizer,
            "sgd" => OptimizerType.Sgd,
            var other => Unmodelled(other),
        };
        OptimizerType Unmodelled(string other)
        {
            cl.Errors.Add($"--optimizer {other} is not modelled (its optimizer states differ from Adam's and SGD's); use adam or sgd.");
            return d.Optimizer;
        }
        var implementation = cl.String("--transformer-impl") switch
        {
            null => d.Implementation,
            TransformerEngineImpl => TransformerImpl.TransformerEngine,
            HarnessImpl => TransformerImpl.Harness,
            var other => UnmodelledImpl(other),
        };
        TransformerImpl UnmodelledImpl(string other)
        {
            cl.Errors.Add($"--transformer-impl {other} is not modelled; use {TransformerEngineImpl} (Megatron's default) or {HarnessImpl} (this project's executor).");
            return d.Implementation;
        }

        var fsdp = ReadFsdp(cl, precision);
        var o = d.OverlapOrDefault;
        return layout with
        {
            Overlap = o with
            {
                TensorParallelComm = cl.Switch("--tp-comm-overlap") || kwaiOverlap || o.TensorParallelComm,
                TensorParallelForwardReduceScatter = !kwaiOverlap && o.TensorParallelForwardReduceScatter,
                GradientReduce = cl.Switch("--overlap-grad-reduce") || o.GradientReduce,
                ParamGather = cl.Switch("--overlap-param-gather") || o.ParamGather,
                PipelineP2p = (!cl.Switch("--no-overlap-p2p-communication") || cl.Switch("--overlap-p2p-communication")) && o.PipelineP2p,
                TensorParallelBackwardAsync = !cl.Switch("--no-async-tensor-model-parallel-allreduce") && o.TensorParallelBackwardAsync,
                DeviceMaxConnections = ReadDeviceMaxConnections(cl) ?? o.DeviceMaxConnections,
                ContextParallelComm = !cl.Switch(ContextParallelNoOverlap.Name) && o.ContextParallelComm,
            },
            Precision = precision,
            AttentionBackend = attention,
            GradientsInFp32 = fsdp.GradientsInFp32,
            Fsdp = fsdp.Fsdp,
            Adam = ReadAdamStates(cl),
            Optimizer = optimizer,
            SgdMomentum = cl.Double("--sgd-momentum") ?? d.SgdMomentum,
            FusedNorm = !cl.Switch("--no-norm-fusion") && d.FusedNorm,
            FusedSwiGlu = !cl.Switch("--no-bias-swiglu-fusion") && d.FusedSwiGlu,
            FusedElementwise = unfused == 0 && d.FusedElementwise,
            GradientAccumulationFusion = !cl.Switch("--no-gradient-accumulation-fusion") && d.GradientAccumulationFusion,
            MaxSplitSizeMb = maxSplit ?? d.MaxSplitSizeMb,
            ExpandableSegments = cl.Switch(ExpandableSegments.Name) || d.ExpandableSegments,
            PipelineScatterGather = !cl.Switch("--no-scatter-gather-tensors-in-pipeline") && d.PipelineScatterGather,
            FusedKernels = !cl.Switch("--no-fused-kernels") && d.FusedKernels,
            FusedGptKernels = !cl.Switch("--no-fused-gpt-kernels") && d.FusedGptKernels,
            Implementation = implementation,
            DdpBucketSize = cl.Int("--ddp-bucket-size") ?? d.DdpBucketSize,
            // --cpu-offloading alone offloads no layer (Megatron's default num-layers is 0).
            CpuOffloadingLayers = cl.Int("--cpu-offloading-num-layers") ?? d.CpuOffloadingLayers,
        };
    }

    /// <summary>
    /// Megatron's main-gradient dtype (megatron/training/arguments.py): fp32 with --accumulate-allreduce-grads-in-fp32, which
    /// bf16 turns on unless --grad-reduce-in-bf16 or --main-grads-dtype bf16; fp16 runs without it keep fp16 gradients.
    /// </summary>
    private static bool ReadGradientsInFp32(CommandLine cl, Precision precision)
    {
        bool accumulate = cl.Switch("--accumulate-allreduce-grads-in-fp32");
        bool bf16Grads = cl.Switch("--grad-reduce-in-bf16") || cl.Choice("--main-grads-dtype", "fp32", "bf16") == "bf16";
        if (bf16Grads && accumulate)
            cl.Errors.Add("--accumulate-allreduce-grads-in-fp32 contradicts --grad-reduce-in-bf16 and --main-grads-dtype bf16; pass one.");
        if (bf16Grads && precision != Precision.Bf16)
            cl.Errors.Add("--grad-reduce-in-bf16 and --main-grads-dtype bf16 need --bf16.");
        return precision switch
        {
            Precision.Fp16 => accumulate,
            Precision.Bf16 => !bf16Grads,
            _ => true,
        };
    }

    /// <summary>Megatron's --use-precision-aware-optimizer and the state dtypes it takes.</summary>
    private static AdamStates ReadAdamStates(CommandLine cl)
    {
        StateDtype Dtype(string flag, params string[] choices) => cl.Choice(flag, choices) switch
        {
            "fp16" => StateDtype.Fp16,
            "bf16" => StateDtype.Bf16,
            "fp8" => StateDtype.Fp8,
            _ => StateDtype.Fp32,
        };
        return new AdamStates(cl.Switch("--use-precision-aware-optimizer"), Dtype("--main-params-dtype", "fp32", "fp16"),
            Dtype("--exp-avg-dtype", "fp32", "fp16", "bf16", "fp8"), Dtype("--exp-avg-sq-dtype", "fp32", "fp16", "bf16", "fp8"));
    }

    private static RecomputeSpec ReadRecompute(CommandLine cl)
    {
        var granularity = cl.Choice("--recompute-granularity", "full", "selective") switch
        {
            "full" => RecomputeGranularity.Full,
            "selective" => RecomputeGranularity.Selective,
            _ => cl.Switch("--recompute-activations") ? RecomputeGranularity.Selective : RecomputeGranularity.None,
        };
        var method = cl.Choice("--recompute-method", "uniform", "block") == "block" ? RecomputeMethod.Block : RecomputeMethod.Uniform;
        if (cl.String("--recompute-method") is not null && granularity != RecomputeGranularity.Full)
            cl.Errors.Add("--recompute-method applies only with --recompute-granularity full.");
        var none = RecomputeSpec.None;
        return new RecomputeSpec(granularity, method, cl.Int("--recompute-num-layers") ?? none.NumLayers,
            cl.Switch("--kaimm-recompute-norm"), cl.Switch("--kaimm-recompute-mlp-activation-func"));
    }

    /// <summary>Megatron-core's --attention-backend; else Megatron-LM's older --use-flash-attn, flash; null when neither is
    /// given. With both, --attention-backend decides, as in Megatron-core, which still accepts --use-flash-attn but no longer
    /// reads it (megatron/training/arguments.py at NVIDIA/Megatron-LM d98e8a6).</summary>
    private static AttentionBackend? ReadAttentionBackend(CommandLine cl)
    {
        var backends = Enum.GetValues<AttentionBackend>();
        var word = cl.Choice("--attention-backend", backends.Select(AttentionKernels.Name).ToArray());
        if (word is not null) return backends.First(b => AttentionKernels.Name(b) == word);
        return cl.Switch("--use-flash-attn") ? AttentionBackend.Flash : null;
    }

    /// <summary>Megatron's --cp-comm-type: one type for every layer (a list of per-layer types is refused).</summary>
    private static ContextParallelCommType? ReadContextParallelComm(CommandLine cl) =>
        cl.String("--cp-comm-type") is string s ? ParseContextParallelComm(s, cl.Errors) : null;

    /// <summary>One of Megatron's --cp-comm-type words (all_gather also as allgather), or null with the reason in <paramref name="errors"/>.</summary>
    public static ContextParallelCommType? ParseContextParallelComm(string word, List<string> errors)
    {
        switch (word.ToLowerInvariant())
        {
            case "p2p": return ContextParallelCommType.P2p;
            case "allgather" or "all_gather": return ContextParallelCommType.AllGather;
            case "a2a": return ContextParallelCommType.A2a;
            case "a2a+p2p": return ContextParallelCommType.A2aP2p;
            default:
                errors.Add($"--cp-comm-type '{word}' is not one of p2p, allgather (all_gather), a2a, a2a+p2p.");
                return null;
        }
    }

    /// <summary>Megatron's --hierarchical-context-parallel-sizes as the all-to-all level's size: two sizes whose product is
    /// <paramref name="cp"/> (Megatron asserts the product; a2a+p2p uses the first two levels).</summary>
    private static int? ReadHierarchicalSizes(CommandLine cl, int cp)
    {
        var text = cl.String(HierarchicalSizes.Name);
        if (text is null) return null;
        var words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var sizes = words.Select(w => int.TryParse(w, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : 0).ToArray();
        if (sizes.Length != 2 || sizes.Contains(0) || sizes[0] * sizes[1] != cp)
        {
            cl.Errors.Add($"--hierarchical-context-parallel-sizes {text} is not two positive sizes (all-to-all, ring) whose product is --context-parallel-size {cp}.");
            return null;
        }
        return sizes[0];
    }

    /// <summary>Megatron's spelling of a --cp-comm-type (all_gather written as the codec's allgather).</summary>
    public static string CommTypeName(ContextParallelCommType t) => t switch
    {
        ContextParallelCommType.AllGather => "allgather",
        ContextParallelCommType.A2a => "a2a",
        ContextParallelCommType.A2aP2p => "a2a+p2p",
        _ => "p2p",
    };

    private static string F(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>The flags that give <paramref name="r"/> back (with the world size it ran on): every field that differs
    /// from the default, by the flag <see cref="Read"/> takes it from. Data-parallel size is implied by the world size.</summary>
    public static IReadOnlyList<string> Format(RunDescription r)
    {
        var d = new RunDescription();
        var a = new List<string>();
        void Value(string flag, object value) { a.Add(flag); a.Add(Convert.ToString(value, CultureInfo.InvariantCulture)!); }
        // The layout's sizes always, as a Megatron launch line writes them.
        Value("--tensor-model-parallel-size", r.TensorParallel);
        Value("--pipeline-model-parallel-size", r.PipelineParallel);
        if (r.LayersPerVirtualStage is int l) Value("--num-layers-per-virtual-pipeline-stage", l);
        if (r.LayersInFirstPipelineStage is int first) Value("--decoder-first-pipeline-num-layers", first);
        if (r.LayersInLastPipelineStage is int last) Value("--decoder-last-pipeline-num-layers", last);
        if (r.AccountForEmbeddingInPipelineSplit) a.Add("--account-for-embedding-in-pipeline-split");
        if (r.AccountForLossInPipelineSplit) a.Add("--account-for-loss-in-pipeline-split");
        if (r.ContextParallel != d.ContextParallel) Value("--context-parallel-size", r.ContextParallel);
        if (r.SequenceParallel) a.Add("--sequence-parallel");
        Value("--micro-batch-size", r.MicroBatch);
        Value("--global-batch-size", r.GlobalBatch);
        var rc = r.RecomputeOrNone;
        if (rc.Granularity != RecomputeGranularity.None) Value("--recompute-granularity", rc.Granularity.ToString().ToLowerInvariant());
        if (rc.Granularity == RecomputeGranularity.Full && rc.Method != RecomputeSpec.None.Method) Value("--recompute-method", rc.Method.ToString().ToLowerInvariant());
        if (rc.NumLayers != RecomputeSpec.None.NumLayers) Value("--recompute-num-layers", rc.NumLayers);
        if (rc.NormOutputs) a.Add("--kaimm-recompute-norm");
        if (rc.MlpActivation) a.Add("--kaimm-recompute-mlp-activation-func");
        if (r.OffloadRatio != d.OffloadRatio) Value("--offload-ratio", F(r.OffloadRatio));
        if (r.Fsdp is { } fsdp)
        {
            a.Add(UseMegatronFsdp);
            Value(ShardingStrategy, MegatronFsdp.StrategyName(r.ZeroStage));
            if (fsdp.Version != 1) Value("--megatron-fsdp-version", fsdp.Version);
            if (fsdp.DoubleBuffer) a.Add("--fsdp-double-buffer");
            if (fsdp.CommunicationUnitSize is long unit) Value("--suggested-communication-unit-size", unit);
            if (r.GradientsInFp32 && r.Precision != Precision.Fp32) Value("--megatron-fsdp-main-grads-dtype", "fp32");
        }
        else if (r.ZeroStage == 1) a.Add("--use-distributed-optimizer");
        else if (r.ZeroStage != d.ZeroStage) Value("--zero-stage", r.ZeroStage);
        if (r.SyncFactor != d.SyncFactor) Value("--sync-factor", F(r.SyncFactor));
        if (r.Precision != d.Precision) a.Add(r.Precision == Precision.Fp16 ? "--fp16" : r.Precision == Precision.Fp32 ? "--fp32" : "--bf16");
        if (r.Precision == Precision.Fp16 && r.GradientsInFp32 && r.Fsdp is null) a.Add("--accumulate-allreduce-grads-in-fp32");
        if (r.Precision == Precision.Bf16 && !r.GradientsInFp32 && r.Fsdp is null) a.Add("--grad-reduce-in-bf16");
        var adam = r.AdamOrDefault;
        if (adam.PrecisionAware) a.Add("--use-precision-aware-optimizer");
        void Dtype(string flag, StateDtype dtype) { if (dtype != StateDtype.Fp32) Value(flag, dtype.ToString().ToLowerInvariant()); }
        Dtype("--main-params-dtype", adam.MainParams);
        Dtype("--exp-avg-dtype", adam.ExpAvg);
        Dtype("--exp-avg-sq-dtype", adam.ExpAvgSq);
        if (r.Optimizer == OptimizerType.Sgd) Value("--optimizer", "sgd");
        if (r.SgdMomentum != d.SgdMomentum) Value("--sgd-momentum", F(r.SgdMomentum));
        if (r.ContextParallelComm != d.ContextParallelComm) Value("--cp-comm-type", CommTypeName(r.ContextParallelComm));
        if (r.HierarchicalAllToAllSize is int a2a)
            a.AddRange([HierarchicalSizes.Name, $"{a2a}", $"{(a2a > 0 ? r.ContextParallel / a2a : 0)}"]);
        if (r.AttentionBackend != d.AttentionBackend) Value("--attention-backend", AttentionKernels.Name(r.AttentionBackend));
        // The overlaps as given (Megatron-FSDP's forced ones follow from its strategy, OverlapOrDefault).
        var o = r.Overlap ?? OverlapSpec.Default;
        var od = d.OverlapOrDefault;
        if (o.GradientReduce != od.GradientReduce) a.Add("--overlap-grad-reduce");
        if (o.ParamGather != od.ParamGather) a.Add("--overlap-param-gather");
        if (r.DdpBucketSize is long bucket) Value("--ddp-bucket-size", bucket);
        if (o.TensorParallelComm)
            a.AddRange(o.TensorParallelForwardReduceScatter ? ["--tp-comm-overlap"] : ["--overlap-sp-ag", "--overlap-sp-rs"]);
        if (!o.ContextParallelComm) a.Add(ContextParallelNoOverlap.Name);
        if (!o.PipelineP2p) a.Add("--no-overlap-p2p-communication");
        if (o.DeviceMaxConnections is int q) Value(DeviceMaxConnections.Name, q);
        if (r.MaxSplitSizeMb is int mb) Value(MaxSplitSize.Name, mb);
        if (r.ExpandableSegments) a.Add(ExpandableSegments.Name);
        if (!r.PipelineScatterGather) a.Add("--no-scatter-gather-tensors-in-pipeline");
        if (r.CpuOffloadingLayers != d.CpuOffloadingLayers) { a.Add("--cpu-offloading"); Value("--cpu-offloading-num-layers", r.CpuOffloadingLayers); }
        if (!o.TensorParallelBackwardAsync) a.Add("--no-async-tensor-model-parallel-allreduce");
        if (!r.FusedElementwise) a.AddRange(ElementwiseFusions);
        if (!r.GradientAccumulationFusion) a.Add("--no-gradient-accumulation-fusion");
        if (!r.FusedNorm) a.Add("--no-norm-fusion");
        if (!r.FusedSwiGlu) a.Add("--no-bias-swiglu-fusion");
        if (!r.FusedKernels) a.Add("--no-fused-kernels");
        if (!r.FusedGptKernels) a.Add("--no-fused-gpt-kernels");
        if (r.Implementation != d.Implementation) Value("--transformer-impl", r.Implementation == TransformerImpl.Harness ? HarnessImpl : TransformerEngineImpl);
        return a;
    }
}
