using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// The first half of Megatron's _unscale_main_grads_and_check_for_nan (megatron/core/optimizer/optimizer.py,
/// MixedPrecisionOptimizer, NVIDIA/Megatron-LM d98e8a6): libtorch's _amp_foreach_non_finite_check_and_unscale_ multiplies
/// the float32 main gradients by 1/scale in place and sets a flag where any of them is inf or NaN, in one pass (CPU and
/// CUDA kernels; reached through TorchScript, as TorchSharp does not bind it). A parallel run max-reduces the flag over the
/// ranks that hold other gradients (the data-parallel GradientNorm's FoundInf).
/// </summary>
public static class MainGradUnscale
{
    private const string Source = @"
def unscale(grads: Tensor, found_inf: Tensor, inv_scale: Tensor):
    torch._amp_foreach_non_finite_check_and_unscale_([grads], found_inf, inv_scale)
    return found_inf
";

    // A unit of its own: a libtorch without the operator fails here, not in the other scripted kernels.
    private static readonly Lazy<jit.CompilationUnit> Unit = new(() => jit.compile(Source));

    /// <summary>
    /// Multiplies each of <paramref name="grads"/> (float32, contiguous) by <paramref name="inverseScale"/> in place; returns a
    /// float32 [1] tensor on their device that is 1 where any of them held an inf or a NaN, else 0.
    /// </summary>
    public static Tensor UnscaleAndFindInf(IEnumerable<Tensor> grads, double inverseScale, Device device)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var found = zeros(1, dtype: ScalarType.Float32, device: device);
        using var inverseScalar = inverseScale.ToScalar();   // held until the call returns (HeldScalars says why)
        using var inverse = full(1, inverseScalar, dtype: ScalarType.Float32, device: device);
        foreach (var g in grads)
            if (g.numel() > 0) Unit.Value.invoke("unscale", g, found, inverse);
        return found.MoveToOuterDisposeScope();
    }
}
