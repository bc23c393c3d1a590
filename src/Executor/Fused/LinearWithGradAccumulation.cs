using Harness.Executor.Native;
using System.Runtime.InteropServices;
using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Fused;

/// <summary>
/// Megatron's gradient-accumulation fusion (--gradient-accumulation-fusion, on by default since late 2021): the
/// weight gradient of y = x·Wᵀ is added by the GEMM itself into the weight's float32 main gradient (cuBLAS with
/// bf16 inputs, float32 output and β = 1: aten::addmm.dtype_out), so no bf16 weight gradient is written and no
/// separate pass folds it into the main gradients after each micro-batch. The weight gets no .grad.
/// </summary>
public sealed class LinearWithGradAccumulation : GuardedSingleTensorFunction<LinearWithGradAccumulation>
{
    public override string Name => nameof(LinearWithGradAccumulation);

    /// <summary>x·Wᵀ (+ <paramref name="bias"/>, which the GEMM adds: libtorch's linear runs addmm, whose cuBLAS epilogue adds it
    /// before the output is written, rather than a separate pass over the output); backward returns dL/dx (and dL/db, the
    /// output's gradient summed over the tokens) and adds dL/dW into <paramref name="mainGrad"/> (float32, W's shape).</summary>
    public static Tensor Apply(Tensor input, Tensor weight, Tensor mainGrad, Tensor? bias = null) =>
        apply(input, weight, mainGrad, (object?)bias ?? false);

    /// <summary>x·Wᵀ (+ <paramref name="bias"/>, in the GEMM): with <paramref name="mainGrad"/> <see cref="Apply"/>, without it
    /// libtorch's linear, whose autograd gives W its own gradient.</summary>
    public static Tensor Of(Tensor input, Tensor weight, Tensor? mainGrad, Tensor? bias = null) =>
        mainGrad is null ? nn.functional.linear(input, weight, bias) : Apply(input, weight, mainGrad, bias);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        Tensor input = (Tensor)vars[0], weight = (Tensor)vars[1];
        var bias = vars[3] as Tensor;
        ctx.save_for_backward(new List<Tensor> { input, weight });
        ctx.save_data("main_grad", new MainGradient((Tensor)vars[2]));
        ctx.save_data("bias", bias is not null);
        return nn.functional.linear(input, weight, bias);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor input = saved[0], weight = saved[1];
        WeightGradient.Accumulate(((MainGradient)ctx.get_data("main_grad")).Tensor, gradOutput, input);
        Tensor? db = null;
        if ((bool)ctx.get_data("bias"))
            using (no_grad()) db = gradOutput.reshape(-1, gradOutput.shape[^1]).sum(dim: 0).MoveToOuterDisposeScope();
        // No gradient for the weight (its main gradient took it) nor the main gradient.
        return GradientHandOver.Return(gradOutput, MatrixProduct.Of(gradOutput, weight).MoveToOuterDisposeScope(), null, null, db);
    }
}

/// <summary>The float32 buffer a weight's gradient accumulates into: a buffer the layer owns, not a tensor autograd saves
/// (TorchSharp's save_data warns about tensors, meant for save_for_backward).</summary>
internal sealed record MainGradient(Tensor Tensor);

/// <summary>mainGrad += dyᵀ·x in one GEMM with float32 output (aten::addmm.dtype_out through TorchScript: TorchSharp
/// does not bind it), for <see cref="LinearWithGradAccumulation"/>. libtorch has that overload on CUDA only; on CPU
/// (tests) the same float32 product is formed from float32 copies. 16-bit main gradients (no
/// --accumulate-allreduce-grads-in-fp32) take one GEMM in their own type, which accumulates in float32 and rounds once
/// with β = 1, as Megatron's wgrad_gemm_accum_fp16 does.</summary>
public static class WeightGradient
{
    private const string Source = @"
def accumulate(main_grad: Tensor, grad_output: Tensor, input: Tensor):
    g = grad_output.reshape(-1, grad_output.size(-1))
    x = input.reshape(-1, input.size(-1))
    if main_grad.is_cuda and main_grad.dtype != g.dtype:
        torch.addmm(main_grad, g.t(), x, main_grad.dtype, out=main_grad)
    else:
        main_grad.addmm_(g.t().to(main_grad.dtype), x.to(main_grad.dtype))
";

    // A unit of its own: a libtorch without the dtype overload fails here, not in the other scripted kernels.
    private static readonly Lazy<jit.CompilationUnit> Unit = new(() => jit.compile(Source));

    public static void Accumulate(Tensor mainGrad, Tensor gradOutput, Tensor input) =>
        Unit.Value.invoke("accumulate", mainGrad, gradOutput, input);

    /// <summary>Runs one small accumulation of <paramref name="dtype"/> (bf16 or fp16) inputs on <paramref name="device"/>
    /// against a float32 product; null when it works, else why not (an older libtorch, a device without the overload), in
    /// one sentence.</summary>
    public static string? Probe(Device device, ScalarType dtype = ScalarType.BFloat16)
    {
        try
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator(5);
            var dy = randn(new long[] { 64, 48 }, generator: generator).to(dtype).to(device);
            var x = randn(new long[] { 64, 32 }, generator: generator).to(dtype).to(device);
            var main = ones(48, 32, device: device);
            Accumulate(main, dy, x);
            var expected = MatrixProduct.Of(dy.to(ScalarType.Float32).t(), x.to(ScalarType.Float32)).Plus(1);
            double error = (main - expected).abs().max().item<float>();
            return error < 1e-3 ? null : $"aten::addmm.dtype_out gave an error of {error:E2} against a float32 product.";
        }
        catch (Exception e) when (e is ExternalException or ArgumentException or InvalidOperationException && !AllocationFailure.Is(e))
        {
            return $"aten::addmm.dtype_out is not usable here ({e.Message}).";
        }
    }
}
