using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// Next-token cross-entropy straight from bf16 logits, in float32 arithmetic, without a float32 copy of the logits
/// (the unfused path casts [tokens, vocab] to float32, keeps the float32 log-softmax for backward and casts the
/// gradient back: ~7 passes over 1-2 GB per caat-1b micro-batch). The loss is the same function: every bf16 logit
/// is exact in float32, and only the summation order of the log-sum-exp differs. Saves the bf16 logits and one
/// float per token for backward.
/// </summary>
public sealed class CrossEntropyFunction : GuardedSingleTensorFunction<CrossEntropyFunction>
{
    public override string Name => nameof(CrossEntropyFunction);

    /// <summary>Per-token losses (float32, [tokens]) of logits [.., vocab] (bf16 on a GPU) against int64 labels [..].</summary>
    public static Tensor Apply(Tensor logits, Tensor labels) => apply(logits, labels);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var logits = (Tensor)vars[0];
        logits = logits.reshape(-1, logits.shape[^1]).contiguous();
        var labels = ((Tensor)vars[1]).reshape(-1).to(ScalarType.Int64).contiguous();
        long rows = logits.shape[0];
        var loss = empty(rows, dtype: ScalarType.Float32, device: logits.device);
        var lse = empty(rows, dtype: ScalarType.Float32, device: logits.device);
        FusedKernels.CrossEntropyForward(logits, labels, loss, lse);
        ctx.save_for_backward(new List<Tensor> { logits, labels, lse });
        ctx.save_data("shape", ((Tensor)vars[0]).shape);
        return loss;
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor logits = saved[0], labels = saved[1], lse = saved[2];
        var dloss = gradOutput.to(ScalarType.Float32).contiguous();
        var dlogits = empty_like(logits);
        FusedKernels.CrossEntropyBackward(logits, labels, lse, dloss, dlogits);
        var shape = (long[])ctx.get_data("shape");
        return GradientHandOver.Return(gradOutput, dlogits.view(shape).MoveToOuterDisposeScope(), null);
    }
}
