using Harness.Executor.Native;
using Harness.Executor.Autograd;
using Harness.Executor.Fused;
using Harness.Executor.Offload;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// y = input(source)·Wᵀ (+ b) keeping <c>source</c> for backward instead of the GEMM's input, which backward computes again:
/// Megatron-Kwai's activation rematerialization (Yuan et al., USENIX ATC'24; kwai/Megatron-Kwai atc24ae,
/// megatron/core/tensor_parallel/layers.py, LinearWithGradAccumulationAndAsyncCommunication with recompute_norm or
/// recompute_mlp_activation_func). There the QKV and FC1 linears take the norm's input and run the RMSNorm inside
/// (--kaimm-recompute-norm), and FC2 takes FC1's output and runs the activation inside (--kaimm-recompute-mlp-activation-func),
/// so neither the norm output nor the SwiGLU output is kept; backward recomputes them (no GEMM is recomputed), forms the GEMM's
/// gradients from the recomputed input and back-propagates through the recomputation.
/// Here <c>input</c> is any function of <c>source</c> without dropout: the norm followed by the column-parallel input mapping
/// (under sequence parallelism the all-gather, which backward repeats, as Megatron's column-parallel linear does), or the
/// activation. Its parameters (the norm weight) get their gradients from that inner back-propagation, as under
/// <c>CheckpointFunction</c>.
/// The GEMM's gradients are formed as libtorch's linear backward forms them (mm of the flattened tokens: dX = dY·W,
/// dW = dYᵀ·X, the bias gradient a sum over tokens), and with a main gradient as <see cref="LinearWithGradAccumulation"/>
/// does, so they are the same bits as without the recomputation. Only a source that gets several gradients inside the input
/// function and one outside it can round differently: autograd would add all of them in arrival order, here the inner ones
/// are added first (libtorch's composite RMSNorm on the CPU, whose input feeds both x² and x·rsqrt(·), beside the residual).
/// Backward runs on libtorch's autograd thread, so it owns its own dispose scope.
/// </summary>
public sealed class RecomputedInputLinear : GuardedSingleTensorFunction<RecomputedInputLinear>
{
    public override string Name => nameof(RecomputedInputLinear);

    /// <summary>input(source)·Wᵀ (+ <paramref name="bias"/>); with <paramref name="mainGrad"/> (float32, W's shape) backward adds
    /// dL/dW there (gradient-accumulation fusion) and W gets no gradient.</summary>
    public static Tensor Apply(Func<Tensor, Tensor> input, Tensor source, Tensor weight, Tensor? bias = null, Tensor? mainGrad = null) =>
        apply(input, source, weight, (object?)bias ?? false, (object?)mainGrad ?? false);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var input = (Func<Tensor, Tensor>)vars[0];
        Tensor source = (Tensor)vars[1], weight = (Tensor)vars[2];
        var bias = vars[3] as Tensor;
        ctx.save_for_backward([source, weight]);
        ctx.save_data("input", input);
        ctx.save_data("bias", bias is not null);
        ctx.save_data("main_grad", vars[4] is Tensor mainGrad ? new MainGradient(mainGrad) : false);
        // The GEMM's input is freed here, when this no-grad pass ends: that is the point. Nor does activation offload record it.
        using var scope = NewDisposeScope();
        using var paused = SavedActivations.Pause();
        return nn.functional.linear(input(source), weight, bias).MoveToOuterDisposeScope();
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor source = saved[0], weight = saved[1];
        var detached = source.detach().requires_grad_(source.requires_grad);
        Tensor x;
        using (enable_grad()) x = ((Func<Tensor, Tensor>)ctx.get_data("input"))(detached);
        var dx = MatrixProduct.Of(gradOutput, weight);
        Tensor? dw = null, db = null;
        using (no_grad())
        {
            var dy = gradOutput.reshape(-1, gradOutput.shape[^1]);
            if (ctx.get_data("main_grad") is MainGradient main) WeightGradient.Accumulate(main.Tensor, gradOutput, x.detach());
            else dw = dy.t().mm(x.detach().reshape(-1, x.shape[^1]));
            if ((bool)ctx.get_data("bias")) db = dy.sum(dim: 0);
        }
        BackwardFailure.Run(() => autograd.backward([x], [dx]));
        // No gradient for the function nor the main gradient.
        return GradientHandOver.Return(gradOutput, null, detached.requires_grad ? detached.grad!.MoveToOuterDisposeScope() : null,
            dw?.MoveToOuterDisposeScope(), db?.MoveToOuterDisposeScope(), null);
    }
}
