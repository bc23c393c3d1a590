using static TorchSharp.torch;

namespace Harness.Executor.Autograd;

/// <summary>
/// Identity in forward; in backward, calls back once the gradient of its input is complete, i.e. once backward has
/// passed everything computed from it. Placed at a layer's input, it reports that the layer's parameter gradients
/// are final: each comes out of a node that also feeds that input's gradient, and libtorch accumulates a leaf's
/// gradient (AccumulateGrad, the highest priority in its ready queue) as soon as it is produced. This stands in for
/// the per-parameter post-accumulation hooks Megatron registers, which TorchSharp does not expose.
/// Backward may run on libtorch's autograd thread.
/// </summary>
public sealed class GradReadyMarker : GuardedSingleTensorFunction<GradReadyMarker>
{
    public override string Name => "grad_ready_marker";

    public static Tensor Apply(Tensor x, Action onReady) => apply(x, onReady);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        ctx.save_data("ready", vars[1]);
        return ((Tensor)vars[0]).alias();
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ((Action)ctx.get_data("ready"))();
        return GradientHandOver.Return(grad, grad, null);
    }
}
