using Harness.Executor.Fused;
using Harness.Simulator.Specs;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Transformer;

/// <summary>
/// Megatron's norm choice: LayerNorm (GPT, weight and bias) or RMSNorm (Llama, weight only). Weights stay replicated under
/// tensor parallelism. Fused (the default): one libtorch kernel each, as Transformer Engine's and Apex's norms run. Without
/// norm fusion (--no-norm-fusion): NVIDIA Megatron-LM's legacy RMSNorm (megatron/legacy/model/rms_norm.py at
/// NVIDIA/Megatron-LM 5c7968a, removed since): the statistics and the normalization in float32 PyTorch operators on
/// x.float(), the result cast back to the input's type, then multiplied by the weight in that type; LayerNorm alike, with
/// the biased variance and the bias added after the weight.
/// </summary>
public static class Norms
{
    /// <param name="epsilon">Megatron's --norm-epsilon (<see cref="ModelSpec.NormEpsilon"/>).</param>
    /// <param name="fused">False: --no-norm-fusion's float32 operators.</param>
    public static nn.Module<Tensor, Tensor> Create(Normalization kind, long hidden, double epsilon, ScalarType dtype, Device device, bool fused = true) => kind switch
    {
        Normalization.LayerNorm => new LayerNormalization(hidden, epsilon, dtype, device, fused),
        _ => new RmsNorm(hidden, epsilon, dtype, device, fused),
    };

    /// <summary><see cref="IResidualNorm.AddForward"/> for <paramref name="norm"/> with its weight and bias (null: RMSNorm).</summary>
    internal static (Tensor Normalized, Tensor Sum) AddThenNormalize(nn.Module<Tensor, Tensor> norm, bool fused, Tensor x, Tensor r, PendingDropout? drop,
        Tensor weight, Tensor? bias, double epsilon)
    {
        if (fused && FusedKernels.Applies(x)) return AddNormFunction.Apply(x, r, weight, bias, epsilon, drop?.Draw);
        var sum = ResidualDelta.Add(x, r, drop);
        return (norm.forward(sum), sum);
    }

    /// <summary>x / sqrt(mean(x²) + eps) in float32, cast back to x's type (the legacy RMSNorm's _norm).</summary>
    internal static Tensor RmsNormalized(Tensor x, double epsilon)
    {
        using var scope = NewDisposeScope();
        var x32 = x.to(ScalarType.Float32);
        using var eps = epsilon.ToScalar();
        return (x32 * x32.Squared().mean([-1], keepdim: true).add_(eps, One).rsqrt()).to(x.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>(x − mean) / sqrt(var + eps) in float32 (biased variance, as LayerNorm's), cast back to x's type.</summary>
    internal static Tensor LayerNormalized(Tensor x, double epsilon)
    {
        using var scope = NewDisposeScope();
        var x32 = x.to(ScalarType.Float32);
        var centered = x32 - x32.mean([-1], keepdim: true);
        using var eps = epsilon.ToScalar();
        return (centered * centered.Squared().mean([-1], keepdim: true).add_(eps, One).rsqrt()).to(x.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>LayerNorm (Ba et al. 2016) through libtorch's fused kernel, or --no-norm-fusion's float32 operators (<see cref="Norms"/>).</summary>
public sealed class LayerNormalization : nn.Module<Tensor, Tensor>, IResidualNorm
{
    private readonly Parameter weight, bias;
    private readonly long[] shape;
    private readonly double epsilon;
    private readonly bool fused;

    public LayerNormalization(long hidden, double epsilon, ScalarType dtype, Device device, bool fused = true) : base(nameof(LayerNormalization))
    {
        (this.epsilon, this.fused) = (epsilon, fused);
        shape = new[] { hidden };
        weight = new Parameter(ones(hidden, dtype: dtype, device: device));
        bias = new Parameter(zeros(hidden, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        fused ? nn.functional.layer_norm(x, shape, weight, bias, epsilon) : (Norms.LayerNormalized(x, epsilon) * weight).Plus(bias);

    /// <inheritdoc/>
    public (Tensor Normalized, Tensor Sum) AddForward(Tensor x, Tensor r, PendingDropout? drop = null) => Norms.AddThenNormalize(this, fused, x, r, drop, weight, bias, epsilon);
}

/// <summary>RMSNorm (Zhang and Sennrich 2019): y = x / sqrt(mean(x²) + eps) · w, through libtorch's rms_norm (see
/// <see cref="ScriptedKernels"/>), or --no-norm-fusion's float32 operators (<see cref="Norms"/>).</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>, IResidualNorm
{
    private readonly Parameter weight;
    private readonly double epsilon;
    private readonly bool fused;

    public RmsNorm(long hidden, double epsilon, ScalarType dtype, Device device, bool fused = true) : base(nameof(RmsNorm))
    {
        (this.epsilon, this.fused) = (epsilon, fused);
        weight = new Parameter(ones(hidden, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => fused ? ScriptedKernels.RmsNorm(x, weight, epsilon) : Norms.RmsNormalized(x, epsilon) * weight;

    /// <inheritdoc/>
    public (Tensor Normalized, Tensor Sum) AddForward(Tensor x, Tensor r, PendingDropout? drop = null) => Norms.AddThenNormalize(this, fused, x, r, drop, weight, null, epsilon);
}

/// <summary>A norm that can take the residual add before it (the pre-MLP norm of a decoder layer).</summary>
public interface IResidualNorm
{
    /// <summary>(this norm of x + r, x + r), r first dropped as <paramref name="drop"/> says (Megatron's bias-dropout-add), for
    /// a caller with the executor's fused kernels: one kernel each way (<see cref="AddNormFunction"/>) where it applies, on
    /// bf16 GPU tensors where this norm is libtorch's fused one; else libtorch's dropout, add and this norm (also
    /// --no-norm-fusion's float32 operators).</summary>
    (Tensor Normalized, Tensor Sum) AddForward(Tensor x, Tensor r, PendingDropout? drop = null);
}
