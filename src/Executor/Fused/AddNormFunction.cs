using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The residual add fused with the norm after it (Megatron-core's and Transformer Engine's fusion of the residual with the
/// next norm): y = LayerNorm(x + r)·gamma + beta, or RMSNorm(x + r)·gamma where no bias is given, and s = x + r, the next
/// residual, in one pass over x and r (<see cref="AddNormKernels"/>: the GPT path's module for LayerNorm, the Llama path's
/// for RMSNorm); the unfused path adds (reads 2, writes 1) and normalizes (reads 1, writes 1). Backward writes d(x + r), the
/// gradient arriving on s included, in one pass, which autograd hands to x and r alike, as libtorch's add hands its
/// gradient to both operands; the weight (and bias) gradients follow from a two-stage reduction. Saves s and float32
/// statistics per row (LayerNorm: mean and rstd; RMSNorm: rstd), as libtorch's norms save their input and statistics.
/// With a <see cref="DropoutDraw"/> the sum is x + dropout(r) (Megatron's bias-dropout-add, r being the sublayer's output):
/// the kernel draws the mask from Philox keyed by the draw's seed in forward and again in backward, where r's gradient is
/// d(x + r) through the mask; unfused, libtorch's dropout reads and writes r again and keeps a byte per element for backward.
/// </summary>
public sealed class AddNormFunction : GuardedMultiTensorFunction<AddNormFunction>
{
    public override string Name => nameof(AddNormFunction);

    private const string DropKey = "add_norm.drop";

    /// <summary>(y, s) of x, r [.., h] (bf16 on a GPU) and the norm's weight and, for LayerNorm, bias [h]; RMSNorm without;
    /// r dropped as <paramref name="drop"/> says (null: not).</summary>
    public static (Tensor Normalized, Tensor Sum) Apply(Tensor x, Tensor r, Tensor gamma, Tensor? beta, double epsilon, DropoutDraw? drop = null)
    {
        // A p the kernel's float32 reads as 0 drops nothing: no draw, so backward hands r the sum's gradient.
        var outputs = apply(x, r, gamma, beta!, epsilon, drop is { KernelP: > 0 } d ? d.P : 0.0, drop?.Seed ?? 0L);
        return (outputs[0], outputs[1]);
    }

    protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
    {
        Tensor x = ((Tensor)vars[0]).contiguous(), r = ((Tensor)vars[1]).contiguous(), gamma = (Tensor)vars[2];
        var beta = vars[3] as Tensor;
        // The kernel reads raw pointers: operands it would read past are refused here, where libtorch's add would raise.
        long h = x.shape[^1];
        if (!r.shape.SequenceEqual(x.shape) || gamma.numel() != h || !gamma.is_contiguous() || !Bf16OnGpu(x) || !Bf16OnGpu(r) || !Bf16OnGpu(gamma) ||
            (beta is not null && (beta.numel() != h || !beta.is_contiguous() || !Bf16OnGpu(beta))))
            throw new ArgumentException($"The fused residual add + norm takes bf16 CUDA x and r of one shape and a weight (and bias) of {h} elements; got x {Describe(x)}, r {Describe(r)}, weight {Describe(gamma)}{(beta is null ? "" : $", bias {Describe(beta)}")}.");
        long rows = x.numel() / h;
        DropoutDraw? drop = (double)vars[5] > 0 ? new DropoutDraw((double)vars[5], (long)vars[6]) : null;
        ctx.save_data(DropKey, drop);
        var s = empty_like(x);
        var y = empty_like(x);
        var rstd = empty(rows, dtype: ScalarType.Float32, device: x.device);
        if (beta is null)
        {
            FusedKernels.AddRmsNormForward(x, r, gamma, (double)vars[4], drop, s, y, rstd);
            // s through an alias: autograd attaches this function to the output s itself, and a saved output would hold its own node.
            ctx.save_for_backward([s.detach(), gamma, rstd]);
        }
        else
        {
            var mean = empty(rows, dtype: ScalarType.Float32, device: x.device);
            GptKernels.AddLayerNormForward(x, r, gamma, beta, (double)vars[4], drop, s, y, mean, rstd);
            ctx.save_for_backward([s.detach(), gamma, rstd, mean]);
        }
        return [y, s];
    }

    private static bool Bf16OnGpu(Tensor t) => t.dtype == ScalarType.BFloat16 && t.is_cuda;

    private static string Describe(Tensor t) => $"[{string.Join(", ", t.shape)}] {t.dtype} on {t.device}";

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor s = saved[0], gamma = saved[1], rstd = saved[2];
        Tensor dy = grads[0].contiguous(), ds = grads[1].contiguous();
        var drop = (DropoutDraw?)ctx.get_data(DropKey);
        var dsum = empty_like(s);
        var dr = drop is null ? null : empty_like(s);
        var dgamma = empty_like(gamma);
        Tensor? dbeta = null;
        if (saved.Count == 3) FusedKernels.AddRmsNormBackward(dy, ds, s, gamma, rstd, drop, dsum, dr, dgamma);
        else
        {
            dbeta = empty_like(gamma);
            GptKernels.AddLayerNormBackward(dy, ds, s, gamma, saved[3], rstd, drop, dsum, dr, dgamma, dbeta);
        }
        dsum.MoveToOuterDisposeScope();
        return GradientHandOver.Return(grads, dsum, dr?.MoveToOuterDisposeScope() ?? dsum, dgamma.MoveToOuterDisposeScope(), dbeta?.MoveToOuterDisposeScope(),
            null, null, null);
    }
}
