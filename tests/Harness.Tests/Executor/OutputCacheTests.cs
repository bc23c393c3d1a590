using Harness.Executor.Autograd;
using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Tests.Executor;

/// <summary>
/// The executor's custom autograd functions do not keep TorchSharp's copy of every output (OutputCache): TorchSharp's own
/// apply leaves two 1000 x 1000 float32 copies in the node of a two-output function, the executor's apply none, and an
/// output whose gradient never arrives still gets zeros of its shape in backward, also after the dispose scope of the
/// forward that made it has ended.
/// </summary>
[Collection("training")]
public class OutputCacheTests
{
    private sealed class TwoOutputs : GuardedMultiTensorFunction<TwoOutputs>
    {
        [ThreadStatic] public static autograd.AutogradContext? Last;
        public override string Name => nameof(TwoOutputs);

        public static List<Tensor> Apply(Tensor x) => apply(x);

        /// <summary>TorchSharp's apply alone, as the executor's functions called it before.</summary>
        public static List<Tensor> ApplyKeepingCopies(Tensor x) => autograd.MultiTensorFunction<TwoOutputs>.apply(x);

        protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
        {
            Last = ctx;
            var x = (Tensor)vars[0];
            return [x.Times(2.0), x.Times(3.0)];
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> grads) =>
            [grads[0].Times(2.0).add(grads[1].Times(3.0), One)];
    }

    [Fact]
    public void TheNodeKeepsNoCopiesOfTheOutputsAndAnUnusedOutputGetsZeros()
    {
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        var x = ones(1000, 1000).requires_grad_();
        var kept = TwoOutputs.ApplyKeepingCopies(x);
        Assert.Equal(2L * 1000 * 1000 * 4, OutputCache.Release(TwoOutputs.Last!));

        var outputs = TwoOutputs.Apply(x);
        Assert.Equal(0, OutputCache.Release(TwoOutputs.Last!));
        // Only the first output reaches the loss: the second's gradient is materialized as zeros of its shape.
        outputs[0].sum().backward();
        Assert.Equal(2.0f, x.grad!.min().item<float>());
        Assert.Equal(2.0f, x.grad!.max().item<float>());
        Assert.Equal(new long[] { 1000, 1000 }, x.grad!.shape);
    }

    [Fact]
    public void AnOutputsMissingGradientIsMaterializedAfterTheScopeOfItsForwardEnded()
    {
        // A model's forward runs in a dispose scope that ends before backward; the second output is never used.
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        var x = ones(3, 4).requires_grad_();
        Tensor loss;
        using (NewDisposeScope())
            loss = TwoOutputs.Apply(x)[0].sum().MoveToOuterDisposeScope();
        loss.backward();
        Assert.Equal(2.0f, x.grad!.min().item<float>());
        Assert.Equal(2.0f, x.grad!.max().item<float>());
    }
}
