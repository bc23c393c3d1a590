using Harness.Simulator.Specs;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>Megatron's norm choice: LayerNorm (GPT, weight and bias) or RMSNorm (Llama, weight only). Weights stay replicated under tensor parallelism.</summary>
public static class Norms
{
    public const double Epsilon = 1e-5;

    public static nn.Module<Tensor, Tensor> Create(Normalization kind, long hidden, ScalarType dtype, Device device) => kind switch
    {
        Normalization.LayerNorm => new LayerNormalization(hidden, dtype, device),
        _ => new RmsNorm(hidden, dtype, device),
    };
}

/// <summary>LayerNorm (Ba et al. 2016) through libtorch's fused kernel.</summary>
public sealed class LayerNormalization : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight, bias;
    private readonly long[] shape;

    public LayerNormalization(long hidden, ScalarType dtype, Device device) : base(nameof(LayerNormalization))
    {
        shape = new[] { hidden };
        weight = new Parameter(ones(hidden, dtype: dtype, device: device));
        bias = new Parameter(zeros(hidden, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => nn.functional.layer_norm(x, shape, weight, bias, Norms.Epsilon);
}

/// <summary>RMSNorm (Zhang and Sennrich 2019): y = x / sqrt(mean(x²) + eps) · w, through libtorch's rms_norm (see <see cref="ScriptedKernels"/>).</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public RmsNorm(long hidden, ScalarType dtype, Device device) : base(nameof(RmsNorm))
    {
        weight = new Parameter(ones(hidden, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => ScriptedKernels.RmsNorm(x, weight, Norms.Epsilon);
}
