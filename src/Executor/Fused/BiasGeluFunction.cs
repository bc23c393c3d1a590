using Harness.Executor.Autograd;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// Megatron's fused bias-GeLU (megatron/core/fusions/fused_bias_gelu.py, GeLUFunction, at NVIDIA/Megatron-LM d98e8a6), which
/// Megatron-core's MLP runs for GeLU with biases unless --no-bias-gelu-fusion: GeLU's tanh approximation,
/// x·0.5·(1 + tanh(0.79788456·x·(1 + 0.044715·x²))), forward keeping only its input, and backward the derivative of that
/// approximation, 0.5·x·(1 − t²)(0.79788456 + 0.1070322243·x²) + 0.5·(1 + t) times the incoming gradient (bias_gelu_back).
/// Here fc1's GEMM has added the bias already. Both run in float32 on 16-bit inputs (in their own type otherwise) and round once, as the scripted fuser
/// (jit_fuser) computes such a chain; F.gelu (erf's exact form) is what --no-bias-gelu-fusion runs.
/// </summary>
public sealed class BiasGeluFunction : GuardedSingleTensorFunction<BiasGeluFunction>
{
    public override string Name => nameof(BiasGeluFunction);

    public static Tensor Apply(Tensor x) => apply(x);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        ctx.save_for_backward([x]);
        using var scope = NewDisposeScope();
        var x32 = x.to(Compute(x));
        var t = (0.79788456 * x32 * (1 + 0.044715 * x32 * x32)).tanh();
        return (x32 * 0.5 * (1 + t)).to(x.dtype).MoveToOuterDisposeScope();
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        using var scope = NewDisposeScope();
        var x = ctx.get_saved_variables()[0];
        var x32 = x.to(Compute(x));
        var t = (0.79788456 * x32 * (1 + 0.044715 * x32 * x32)).tanh();
        var ff = 0.5 * x32 * ((1 - t * t) * (0.79788456 + 0.1070322243 * x32 * x32)) + 0.5 * (1 + t);
        var dx = (ff * gradOutput.to(Compute(x))).to(gradOutput.dtype);
        return GradientHandOver.Return(gradOutput, dx.MoveToOuterDisposeScope());
    }

    /// <summary>Float32 for 16-bit inputs; float32 and float64 (gradient checks) as they are.</summary>
    private static ScalarType Compute(Tensor x) => x.dtype is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : x.dtype;
}
