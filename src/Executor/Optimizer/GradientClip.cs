using static Harness.Executor.Native.HeldScalars;
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
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar limit = clipGrad.ToScalar(), epsilon = 1e-6.ToScalar(), one = 1.0.ToScalar();
        using var total = norm.add(epsilon, One);
        using var inverse = total.reciprocal();
        using var coefficient = inverse.mul(limit).clamp_max_(one);
        grads.mul_(coefficient);
    }
}
