using TorchSharp;
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
        // clipGrad / (norm + 1e-6) as TorchSharp's operators compute it, with the numbers as Scalars held until the calls return
        // (see WeightInit.Draw: an operator's temporary Scalar was finalized mid-kernel beside a collecting thread).
        using Scalar limit = clipGrad, epsilon = 1e-6, alpha = 1, one = 1.0;
        using var total = norm.add(epsilon, alpha);
        using var inverse = total.reciprocal();
        using var coefficient = inverse.mul(limit).clamp_max_(one);
        grads.mul_(coefficient);
    }
}
