using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The residual add fused with the LayerNorm after it (Megatron-core's and Transformer Engine's fusion of the residual
/// with the next norm): y = LayerNorm(x + r)·gamma + beta and s = x + r, the next residual, in one pass over x and r
/// (<see cref="GptKernels.AddLayerNormForward"/>); the unfused path adds (reads 2, writes 1) and normalizes (reads 1, writes
/// 1). Backward writes d(x + r), the gradient arriving on s included, in one pass, which autograd hands to x and r alike,
/// as libtorch's add hands its gradient to both operands; d gamma and d beta follow from a two-stage reduction. Saves s,
/// and float32 mean and rstd per row, as libtorch's layer_norm saves its input and statistics.
/// </summary>
public sealed class AddLayerNormFunction : GuardedMultiTensorFunction<AddLayerNormFunction>
{
    public override string Name => nameof(AddLayerNormFunction);

    /// <summary>(y, s) of x, r [.., h] (bf16 on a GPU) and the norm's weight and bias [h].</summary>
    public static (Tensor Normalized, Tensor Sum) Apply(Tensor x, Tensor r, Tensor gamma, Tensor beta, double epsilon)
    {
        var outputs = apply(x, r, gamma, beta, epsilon);
        return (outputs[0], outputs[1]);
    }

    protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
    {
        Tensor x = ((Tensor)vars[0]).contiguous(), r = ((Tensor)vars[1]).contiguous(), gamma = (Tensor)vars[2], beta = (Tensor)vars[3];
        // The kernel reads raw pointers: operands it would read past are refused here, where libtorch's add would raise.
        long h = x.shape[^1];
        if (!r.shape.SequenceEqual(x.shape) || gamma.numel() != h || beta.numel() != h || !gamma.is_contiguous() || !beta.is_contiguous() ||
            !Bf16OnGpu(x) || !Bf16OnGpu(r) || !Bf16OnGpu(gamma) || !Bf16OnGpu(beta))
            throw new ArgumentException($"The fused residual add + LayerNorm takes bf16 CUDA x and r of one shape and a weight and bias of {h} elements; got x {Describe(x)}, r {Describe(r)}, weight {Describe(gamma)}, bias {Describe(beta)}.");
        long rows = x.numel() / h;
        var s = empty_like(x);
        var y = empty_like(x);
        var mean = empty(rows, dtype: ScalarType.Float32, device: x.device);
        var rstd = empty(rows, dtype: ScalarType.Float32, device: x.device);
        GptKernels.AddLayerNormForward(x, r, gamma, beta, (double)vars[4], s, y, mean, rstd);
        // s through an alias: autograd attaches this function to the output s itself, and a saved output would hold its own node.
        ctx.save_for_backward([s.detach(), gamma, mean, rstd]);
        return [y, s];
    }

    private static bool Bf16OnGpu(Tensor t) => t.dtype == ScalarType.BFloat16 && t.is_cuda;

    private static string Describe(Tensor t) => $"[{string.Join(", ", t.shape)}] {t.dtype} on {t.device}";

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor s = saved[0], gamma = saved[1], mean = saved[2], rstd = saved[3];
        Tensor dy = grads[0].contiguous(), ds = grads[1].contiguous();
        var dsum = empty_like(s);
        var dgamma = empty_like(gamma);
        var dbeta = empty_like(gamma);
        GptKernels.AddLayerNormBackward(dy, ds, s, gamma, mean, rstd, dsum, dgamma, dbeta);
        dsum.MoveToOuterDisposeScope();
        return GradientHandOver.Return(grads, dsum, dsum, dgamma.MoveToOuterDisposeScope(), dbeta.MoveToOuterDisposeScope(), null);
    }
}
