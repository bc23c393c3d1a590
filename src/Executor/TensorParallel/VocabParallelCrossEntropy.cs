using Harness.Executor.Autograd;
using Harness.Executor.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// Megatron's vocab_parallel_cross_entropy (tensor_parallel/cross_entropy.py): each rank holds the logits of its
/// vocabulary slice [start, start + V/t); the loss −log softmax(z)[label] needs only three all-reduces of one
/// number per token (the max for stability, the target logit, the sum of exponentials), never the full logits.
/// Backward: softmax − onehot(label) on the local slice, times the incoming gradient. Float32 throughout.
/// Inputs: logits [N, V/t], labels [N]; output: per-token loss [N].
/// </summary>
public sealed class VocabParallelCrossEntropy : GuardedSingleTensorFunction<VocabParallelCrossEntropy>
{
    public override string Name => "vocab_parallel_cross_entropy";

    public static Tensor Apply(Tensor logits, Tensor labels, ICommunicator tp) => apply(logits, labels, tp);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var (logits, labels, tp) = ((Tensor)vars[0], (Tensor)vars[1], (ICommunicator)vars[2]);
        long partition = logits.shape[^1], start = tp.Rank * partition;
        using var scope = NewDisposeScope();
        var z = logits.to(ScalarType.Float32, copy: true);
        var max = z.amax(new long[] { -1 }).contiguous();
        tp.AllReduce(max, ReduceOp.Max);
        z.sub_(max.unsqueeze(-1));
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar first = start.ToScalar(), end = (start + partition).ToScalar(), zero = 0.ToScalar();
        var outside = labels.lt(first).logical_or_(labels.ge(end));
        var local = (labels - first).masked_fill_(outside, zero);
        var target = z.gather(-1, local.unsqueeze(-1)).squeeze(-1).masked_fill_(outside, zero).contiguous();
        tp.AllReduce(target);
        var exp = z.exp_();
        var sumExp = exp.sum(-1).contiguous();
        tp.AllReduce(sumExp);
        var loss = sumExp.log().sub_(target);
        var softmax = exp.div_(sumExp.unsqueeze(-1));
        ctx.save_for_backward([softmax.MoveToOuterDisposeScope(), local.MoveToOuterDisposeScope(), outside.MoveToOuterDisposeScope()]);
        ctx.save_data("dtype", logits.dtype);
        return loss.MoveToOuterDisposeScope();
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var (softmax, local, outside) = (saved[0], saved[1], saved[2]);
        var hit = outside.logical_not().to(ScalarType.Float32).unsqueeze(-1);
        var g = softmax.clone().scatter_add_(-1, local.unsqueeze(-1), hit.neg()).mul_(grad.unsqueeze(-1));
        return GradientHandOver.Return(grad, g.to((ScalarType)ctx.get_data("dtype")).MoveToOuterDisposeScope(), null, null);
    }
}
