namespace Harness.Simulator.Specs;

/// <summary>
/// Megatron-core's --attention-backend (megatron/core/transformer/enums.py, AttnBackend at NVIDIA/Megatron-LM d98e8a6): which
/// kernel computes softmax(QKᵀ/√d)·V. Megatron sets Transformer Engine's NVTE_FLASH_ATTN, NVTE_FUSED_ATTN and NVTE_UNFUSED_ATTN
/// from it (language_module.py, _set_attention_backend): one of them on for flash, fused and unfused, all three on for auto (Transformer
/// Engine then chooses: <see cref="AttentionKernels.Resolve"/>), none for local.
/// </summary>
public enum AttentionBackend
{
    /// <summary>FlashAttention-2 (Dao 2023): tiles the causal square, skips its masked half, keeps an fp32 log-sum-exp per
    /// head and token, recomputes the scores in backward. Megatron-LM's legacy --use-flash-attn.</summary>
    Flash,
    /// <summary>cuDNN's fused attention (Transformer Engine's FusedAttention, sub-backend F16_arbitrary_seqlen): the same
    /// algorithm as flash, cuDNN's kernels; keeps fp32 softmax statistics per head and token.</summary>
    Fused,
    /// <summary>Transformer Engine's UnfusedDotProductAttention: the two batched matmuls and a scale-mask-softmax and dropout
    /// over the whole s x s score matrix, which it keeps for backward (Korthikanti et al. 2022's 5·a·s²·b).</summary>
    Unfused,
    /// <summary>Megatron-core's own DotProductAttention (megatron/core/transformer/dot_product_attention.py, with --spec
    /// local): the same unfused kernels as <see cref="Unfused"/>.</summary>
    Local,
    /// <summary>Megatron-core's default: Transformer Engine picks per GPU, dtype and shape (<see cref="AttentionKernels.Resolve"/>).</summary>
    Auto,
}

/// <summary>What each <see cref="AttentionBackend"/> is on a GPU: which kernel `auto` resolves to, what it keeps, whether the GPU
/// has it.</summary>
public static class AttentionKernels
{
    /// <summary>The compute capability (10·major + minor, Transformer Engine's "sm" numbers) from which cuDNN's fused attention
    /// runs and Transformer Engine considers FlashAttention-2 (get_attention_backend: both disabled below sm80).</summary>
    public const int AmpereSm = 80;

    /// <summary>From this compute capability on, Transformer Engine prefers FusedAttention when FlashAttention can run too.</summary>
    public const int HopperSm = 90;

    /// <summary>Megatron's spelling of a backend.</summary>
    public static string Name(AttentionBackend b) => b.ToString().ToLowerInvariant();

    /// <summary>
    /// The kernel <paramref name="c"/>'s backend runs on <paramref name="gpu"/>; never <see cref="AttentionBackend.Auto"/>.
    /// Auto is Transformer Engine's get_attention_backend
    /// (transformer_engine/pytorch/attention/dot_product_attention/utils.py at NVIDIA/TransformerEngine d0067d0): FlashAttention
    /// and FusedAttention need fp16 or bf16 inputs and compute capability 8.0 or more, else UnfusedDotProductAttention runs;
    /// where both can run, FusedAttention on sm90 and newer ("to give FusedAttention preference on Hopper+ for performance
    /// reasons"), FlashAttention below. A GPU without a compute capability (not NVIDIA's) has no Transformer Engine: its own
    /// fused attention kernel, which the flash efficiency stands for.
    /// </summary>
    public static AttentionBackend Resolve(RunDescription c, GpuSpec gpu)
    {
        if (c.AttentionBackend != AttentionBackend.Auto) return c.AttentionBackend;
        if (gpu.ComputeCapability is not int sm) return AttentionBackend.Flash;
        if (c.Precision == Precision.Fp32 || sm < AmpereSm) return AttentionBackend.Unfused;
        return sm >= HopperSm && gpu.Efficiency.FusedAttention is not null ? AttentionBackend.Fused : AttentionBackend.Flash;
    }

    /// <summary>Whether the (resolved) backend keeps the s x s scores for backward: the unfused kernels do, flash and cuDNN's
    /// fused kernel keep per-row softmax statistics instead.</summary>
    public static bool KeepsScores(AttentionBackend resolved) => resolved is AttentionBackend.Unfused or AttentionBackend.Local;

    /// <summary>Why <paramref name="c"/>'s backend cannot run on <paramref name="gpu"/>, in one sentence; null when it can.
    /// FlashAttention-2 needs compute capability 8.0 (Transformer Engine disables it below sm80), cuDNN's fused attention a GPU
    /// with a fused-attention efficiency (none below sm80, none off NVIDIA).</summary>
    public static string? Unavailable(RunDescription c, GpuSpec gpu) => c.AttentionBackend switch
    {
        AttentionBackend.Fused when gpu.Efficiency.FusedAttention is null =>
            $"--attention-backend fused: the {gpu.Name} has no cuDNN fused attention (it needs an NVIDIA GPU of compute capability 8.0 or newer); use flash, unfused, local or auto.",
        AttentionBackend.Flash when gpu.ComputeCapability < AmpereSm =>
            $"--attention-backend flash: the {gpu.Name} (compute capability {gpu.ComputeCapability / 10}.{gpu.ComputeCapability % 10}) cannot run FlashAttention-2, which needs 8.0 or newer; use unfused, local or auto.",
        _ => null,
    };
}
