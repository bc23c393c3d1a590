using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The QKV projection's split into queries, keys and values with rotary positions applied, as one kernel each way
/// (<see cref="FusedKernels.QkvRotaryForward"/>). The unfused path rotates strided views of the projection
/// (TorchScript-fused), and its backward makes the attention gradients contiguous, rotates them back and
/// concatenates them into the projection's layout: about eleven copies and element-wise passes per layer.
/// Outputs are [b, s, heads, d] (queries) and [b, s, groups, d] (keys, values), contiguous; attention takes them
/// transposed, which is the layout flash attention reads.
/// </summary>
public sealed class QkvRotaryFunction : GuardedMultiTensorFunction<QkvRotaryFunction>
{
    public override string Name => nameof(QkvRotaryFunction);

    /// <summary>(q, k, v) of projected [b, s, groups·(hpg + 2)·d], rotated by the first s rows of cos and sin± ([≥ s, d]).</summary>
    public static (Tensor Q, Tensor K, Tensor V) Apply(Tensor projected, Tensor cos, Tensor signedSin, long groups, long headsPerGroup, long headDim)
    {
        var outputs = apply(projected, cos, signedSin, groups, headsPerGroup, headDim);
        return (outputs[0], outputs[1], outputs[2]);
    }

    protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var projected = ((Tensor)vars[0]).contiguous();
        Tensor cos = (Tensor)vars[1], signedSin = (Tensor)vars[2];
        long groups = (long)vars[3], hpg = (long)vars[4], d = (long)vars[5], b = projected.shape[0], s = projected.shape[1];
        var q = empty(new[] { b, s, groups * hpg, d }, dtype: projected.dtype, device: projected.device);
        var k = empty(new[] { b, s, groups, d }, dtype: projected.dtype, device: projected.device);
        var v = empty_like(k);
        FusedKernels.QkvRotaryForward(projected, cos, signedSin, q, k, v);
        ctx.save_for_backward([cos, signedSin]);
        ctx.save_data("shape", projected.shape);
        return [q, k, v];
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var unitLast = grads.Select(g => g.stride(-1) == 1 ? g : g.contiguous()).ToList();
        var dprojected = empty((long[])ctx.get_data("shape"), dtype: grads[0].dtype, device: grads[0].device);
        FusedKernels.QkvRotaryBackward(unitLast[0], unitLast[1], unitLast[2], saved[0], saved[1], dprojected);
        return GradientHandOver.Return(grads, dprojected.MoveToOuterDisposeScope(), null, null, null, null, null);
    }
}
