using Harness.Simulator.Specs;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>Megatron's norm choice: LayerNorm (GPT, weight and bias) or RMSNorm (Llama, weight only). Weights stay replicated under tensor parallelism.</summary>
public static class Norms
{
    /// <param name="epsilon">Megatron's --norm-epsilon (<see cref="ModelSpec.NormEpsilon"/>).</param>
    public static nn.Module<Tensor, Tensor> Create(Normalization kind, long hidden, double epsilon, ScalarType dtype, Device device) => kind switch
    {
        Normalization.LayerNorm => new LayerNormalization(hidden, epsilon, dtype, device),
        _ => new RmsNorm(hidden, epsilon, dtype, device),
    };
}

/// <summary>LayerNorm (Ba et al. 2016) through libtorch's fused kernel.</summary>
public sealed class LayerNormalization : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight, bias;
    private readonly long[] shape;
    private readonly double epsilon;

    public LayerNormalization(long hidden, double epsilon, ScalarType dtype, Device device) : base(nameof(LayerNormalization))
    {
        this.epsilon = epsilon;
        shape = new[] { hidden };
        weight = new Parameter(ones(hidden, dtype: dtype, device: device));
        bias = new Parameter(zeros(hidden, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => nn.functional.layer_norm(x, shape, weight, bias, epsilon);
}

/// <summary>RMSNorm (Zhang and Sennrich 2019): y = x / sqrt(mean(x²) + eps) · w, through libtorch's rms_norm (see <see cref="ScriptedKernels"/>).</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double epsilon;

    public RmsNorm(long hidden, double epsilon, ScalarType dtype, Device device) : base(nameof(RmsNorm))
    {
        this.epsilon = epsilon;
        weight = new Parameter(ones(hidden, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => ScriptedKernels.RmsNorm(x, weight, epsilon);
}
