using Harness.Simulator.Specs;

namespace Harness.Cli.Arguments;

/// <summary>
/// The parallel layout and training knobs, by Megatron-LM's (and Megatron-Kwai's) argument names, plus
/// Harness's own: <c>--offload-ratio</c> (= Kwai's alpha), <c>--sync-factor</c> (CAAT-Net's p),
/// <c>--zero-stage</c>, <c>--fp32</c>, <c>--no-flash-attention</c>, <c>--no-overlap-grad-reduce</c>, <c>--no-norm-fusion</c>.
/// The data-parallel size is the world size over tensor x pipeline x context, as in Megatron.
/// Precision defaults to bf16 (Megatron's own default is fp32: pass --fp32 for that).
/// </summary>
public static class ParallelArguments
{
    /// <summary>The flag of the launch's CUDA_DEVICE_MAX_CONNECTIONS, in 1-32 (null: not given).</summary>
    /// <summary>Megatron-Kwai's switch for its context-parallel exchange without overlap (<see cref="OverlapSpec.ContextParallelComm"/>).</summary>
    public static readonly Flag ContextParallelNoOverlapFlag = new("--no-context-parallel-comm-overlap-gemm", false,
        "Megatron-Kwai: the context-parallel K/V all-gather and its gradients' reduce-scatter on the critical path (its scripts pass it for grouped-query attention)");

    public static readonly Flag DeviceMaxConnectionsFlag = new("--cuda-device-max-connections", true,
        "the launch's CUDA_DEVICE_MAX_CONNECTIONS, 1-32 (default: 1 with tensor parallelism, as Megatron-LM requires; else 8); under 1, p2p cannot overlap");

    public static readonly Flag[] Flags =
    {
        new("--tensor-model-parallel-size", true, "tensor-parallel size t"),
        new("--pipeline-model-parallel-size", true, "pipeline-parallel size p"),
        new("--num-layers-per-virtual-pipeline-stage", true, "layers per virtual stage (interleaved 1F1B)"),
        new("--context-parallel-size", true, "context-parallel size"),
        new("--sequence-parallel", false, "sequence parallelism (needs t > 1)"),
        new("--micro-batch-size", true, "micro-batch size b (default 1)"),
        new("--global-batch-size", true, "global batch size (default: micro-batch x data-parallel size)"),
        new("--recompute-granularity", true, "full or selective"),
        new("--recompute-method", true, "uniform or block (full recomputation)"),
        new("--recompute-num-layers", true, "layers per recomputed group (uniform) or recomputed per stage (block)"),
        new("--recompute-activations", false, "selective recomputation (older Megatron flag)"),
        new("--kaimm-recompute-norm", false, "Megatron-Kwai: recompute the norm outputs"),
        new("--kaimm-recompute-mlp-activation-func", false, "Megatron-Kwai: recompute the SwiGLU output"),
        new("--kaimm-offload-activation-ratio", true, "Megatron-Kwai: offload ratio alpha"),
        new("--offload-ratio", true, "offload ratio alpha in [0, 1] (same as Kwai's)"),
        new("--use-distributed-optimizer", false, "Megatron's distributed optimizer (ZeRO stage 1)"),
        new("--zero-stage", true, "ZeRO stage 0-3 (1 = distributed optimizer)"),
        new("--sync-factor", true, "CAAT-Net partial synchronization p in [0, 1] (default 1)"),
        new("--bf16", false, "bf16 mixed precision (the default)"),
        new("--fp16", false, "fp16 mixed precision"),
        new("--fp32", false, "fp32 training"),
        new("--use-flash-attn", false, "flash attention (the default)"),
        new("--no-flash-attention", false, "unfused attention (materializes the s x s scores)"),
        new("--overlap-grad-reduce", false, "overlap the gradient reduction with backward (the default)"),
        new("--no-overlap-grad-reduce", false, "reduce gradients after the last backward"),
        new("--tp-comm-overlap", false, "overlap tensor-parallel communication with GEMMs (Transformer Engine userbuffers)"),
        new("--overlap-sp-ag", false,
            "Megatron-Kwai: overlap the sequence-parallel all-gathers with GEMMs (pass with --overlap-sp-rs)"),
        new("--overlap-sp-rs", false,
            "Megatron-Kwai: overlap backward's collectives too; the forward reduce-scatter stays on the compute stream"),
        ContextParallelNoOverlapFlag,
        new("--overlap-p2p-communication", false, "overlap pipeline p2p with compute (the default)"),
        new("--no-overlap-p2p-communication", false, "pipeline sends block the sender"),
        DeviceMaxConnectionsFlag,
        new("--no-async-tensor-model-parallel-allreduce", false,
            "run the column-parallel input-gradient all-reduce on the compute stream (Megatron-LM 2019-2021)"),
        new("--accumulate-allreduce-grads-in-fp32", false,
            "keep and reduce gradients in fp32 (always with bf16 and fp32; with --fp16 gradients are fp16 without it)"),
        new("--no-masked-softmax-fusion", false, "unfused scale-mask-softmax (pass with the two below: Megatron-LM 2019)"),
        new("--no-bias-gelu-fusion", false, "unfused bias + GeLU"),
        new("--no-bias-dropout-fusion", false, "unfused bias + dropout + residual add"),
        new("--no-gradient-accumulation-fusion", false,
            "add each micro-batch's weight gradients to the main gradients in a separate kernel (Megatron-LM before late 2021)"),
        new("--no-norm-fusion", false, "LayerNorm/RMSNorm as unfused fp32 PyTorch ops (Megatron-LM's legacy RMSNorm, early 2024)"),
    };

    /// <summary>--cuda-device-max-connections, checked to be a number of hardware work queues CUDA accepts.</summary>
    public static int? DeviceMaxConnections(CommandLine cl)
    {
        int? connections = cl.Int(DeviceMaxConnectionsFlag.Name);
        if (connections is < 1 or > 32)
            cl.Errors.Add($"--cuda-device-max-connections {connections} is out of range; CUDA accepts 1 to 32 hardware work queues.");
        return connections;
    }

    /// <summary>Megatron's three element-wise fusion switches, which the simulator models together.</summary>
    private static readonly string[] ElementwiseFusions = ["--no-masked-softmax-fusion", "--no-bias-gelu-fusion", "--no-bias-dropout-fusion"];

    /// <summary>Flags that change the estimate but are not modelled: refusing beats a silently wrong number.</summary>
    public static readonly Flag[] Unsupported =
    {
        new("--num-experts", true, "mixture of experts"),
        new("--expert-model-parallel-size", true, "expert parallelism"),
        new("--fp8-format", true, "fp8 training"),
    };

    /// <summary>Megatron's --recompute-granularity (or the older --recompute-activations), --recompute-method and
    /// --recompute-num-layers, and Megatron-Kwai's recompute flags.</summary>
    public static RecomputeSpec Recompute(CommandLine cl)
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
        return new RecomputeSpec(granularity, method, cl.Int("--recompute-num-layers") ?? 1,
            cl.Switch("--kaimm-recompute-norm"), cl.Switch("--kaimm-recompute-mlp-activation-func"));
    }

    /// <summary>The configuration the flags describe. Problems go to <see cref="CommandLine.Errors"/>; the config is
    /// still returned (with data-parallel size 1 when the world size does not divide) so that its own
    /// <see cref="RunDescription.Validate"/> can add every further reason.</summary>
    public static RunDescription Read(CommandLine cl, int worldSize)
    {
        foreach (var f in Unsupported)
            if (cl.String(f.Name) is not null || cl.Switch(f.Name))
                cl.Errors.Add($"{f.Name} ({f.Help}) changes the estimate but the simulator does not model it; remove it.");

        int t = cl.Int("--tensor-model-parallel-size") ?? 1;
        int p = cl.Int("--pipeline-model-parallel-size") ?? 1;
        int cp = cl.Int("--context-parallel-size") ?? 1;
        int? l = cl.Int("--num-layers-per-virtual-pipeline-stage");
        int b = cl.Int("--micro-batch-size") ?? 1;
        int dp = 1;
        long divisor = (long)t * p * cp;
        if (divisor > 0 && worldSize % divisor == 0) dp = (int)(worldSize / divisor);
        else if (divisor > 0)
            cl.Errors.Add($"world size {worldSize} is not divisible by tensor {t} x pipeline {p} x context {cp} = {divisor}; choose sizes whose product divides --gpus.");
        // A micro-batch below 1 is reported as such; the default global batch must not echo it as a second mistake.
        int gbs = cl.Int("--global-batch-size") ?? Math.Max(b, 1) * dp;

        var recompute = Recompute(cl);

        double? kwaiAlpha = cl.Double("--kaimm-offload-activation-ratio"), alpha = cl.Double("--offload-ratio");
        if (kwaiAlpha is double ka && alpha is double aa && ka != aa)
            cl.Errors.Add($"--offload-ratio {aa} and --kaimm-offload-activation-ratio {ka} disagree; pass one.");
        int zero = cl.Int("--zero-stage") ?? (cl.Switch("--use-distributed-optimizer") ? 1 : 0);
        if (cl.Switch("--use-distributed-optimizer") && zero < 1)
            cl.Errors.Add($"--use-distributed-optimizer is ZeRO stage 1 and contradicts --zero-stage {zero}.");

        int precisions = (cl.Switch("--bf16") ? 1 : 0) + (cl.Switch("--fp16") ? 1 : 0) + (cl.Switch("--fp32") ? 1 : 0);
        if (precisions > 1) cl.Errors.Add("pass at most one of --bf16, --fp16, --fp32.");
        var precision = cl.Switch("--fp16") ? Precision.Fp16 : cl.Switch("--fp32") ? Precision.Fp32 : Precision.Bf16;
        if (cl.Switch("--use-flash-attn") && cl.Switch("--no-flash-attention"))
            cl.Errors.Add("--use-flash-attn and --no-flash-attention contradict each other.");
        if (cl.Switch("--overlap-grad-reduce") && cl.Switch("--no-overlap-grad-reduce"))
            cl.Errors.Add("--overlap-grad-reduce and --no-overlap-grad-reduce contradict each other.");
        if (cl.Switch("--overlap-p2p-communication") && cl.Switch("--no-overlap-p2p-communication"))
            cl.Errors.Add("--overlap-p2p-communication and --no-overlap-p2p-communication contradict each other.");

        int? connections = DeviceMaxConnections(cl);

        bool kwaiOverlap = cl.Switch("--overlap-sp-ag") || cl.Switch("--overlap-sp-rs");
        if (cl.Switch("--overlap-sp-ag") != cl.Switch("--overlap-sp-rs"))
            cl.Errors.Add("the simulator models Megatron-Kwai's --overlap-sp-ag and --overlap-sp-rs together (its launch scripts pass both); pass both or neither.");
        if (kwaiOverlap && cl.Switch("--tp-comm-overlap"))
            cl.Errors.Add("--tp-comm-overlap (Transformer Engine) and Megatron-Kwai's --overlap-sp-ag --overlap-sp-rs are different implementations; pass one.");

        int unfused = ElementwiseFusions.Count(cl.Switch);
        if (unfused is > 0 and < 3)
            cl.Errors.Add($"the simulator models {string.Join(", ", ElementwiseFusions)} together (Megatron-LM 2019 had none of these fusions); pass all three or none.");

        var config = new RunDescription(
            DataParallel: dp, TensorParallel: t, PipelineParallel: p, LayersPerVirtualStage: l, ContextParallel: cp,
            SequenceParallel: cl.Switch("--sequence-parallel"), MicroBatch: b, GlobalBatch: gbs,
            Recompute: recompute, OffloadRatio: alpha ?? kwaiAlpha ?? 0, ZeroStage: zero,
            SyncFactor: cl.Double("--sync-factor") ?? 1.0,
            Overlap: new OverlapSpec(cl.Switch("--tp-comm-overlap") || kwaiOverlap, !cl.Switch("--no-overlap-grad-reduce"),
                !cl.Switch("--no-overlap-p2p-communication"), !cl.Switch("--no-async-tensor-model-parallel-allreduce"),
                TensorParallelForwardReduceScatter: !kwaiOverlap, DeviceMaxConnections: connections,
                ContextParallelComm: !cl.Switch(ContextParallelNoOverlapFlag.Name)),
            Precision: precision, FlashAttention: !cl.Switch("--no-flash-attention"),
            // Megatron: main gradients are fp32 with --accumulate-allreduce-grads-in-fp32, which bf16 forces; fp16 runs
            // without it keep and all-reduce fp16 gradients.
            GradientsInFp32: precision != Precision.Fp16 || cl.Switch("--accumulate-allreduce-grads-in-fp32"),
            FusedNorm: !cl.Switch("--no-norm-fusion"),
            FusedElementwise: unfused == 0,
            GradientAccumulationFusion: !cl.Switch("--no-gradient-accumulation-fusion"));
        return config;
    }
}
