using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>Megatron's --clip-grad (megatron/core/optimizer/clip_grads.py, clip_grad_by_total_norm_fp32; Pascanu et al.
/// 2013): every gradient scaled so that their global norm is at most the limit, before any optimizer's update.</summary>
public static class GradientClip
{
    /// <summary>Scales <paramref name="grads"/> in place by min(1, limit / (norm + 1e-6)); a limit of 0 or below clips nothing.</summary>
    public static void Clip(Tensor grads, Tensor norm, double clipGrad)
    {
        if (clipGrad <= 0) return;
        using var coefficient = (clipGrad / (norm + 1e-6)).clamp_max_(1.0);
        grads.mul_(coefficient);
    }
}
