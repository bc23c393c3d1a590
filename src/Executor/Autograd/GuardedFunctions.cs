using static TorchSharp.torch;

namespace Harness.Executor.Autograd;

/// <summary>
/// The base of the executor's custom autograd functions with one output: forward notes how many arguments it took, and
/// backward runs under <see cref="BackwardFailure.Guard"/>, so an exception in it fails the step instead of the process.
/// </summary>
public abstract class GuardedSingleTensorFunction<T> : autograd.SingleTensorFunction<T> where T : GuardedSingleTensorFunction<T>, new()
{
    public sealed override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ctx.save_data(ArgumentCount.Key, vars.Length);
        return Forward(ctx, vars);
    }

    public sealed override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad) =>
        BackwardFailure.Guard(ArgumentCount.Of(ctx), () => Backward(ctx, grad));

    protected abstract Tensor Forward(autograd.AutogradContext ctx, object[] vars);
    protected abstract List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad);
}

/// <summary>The same for functions with several outputs.</summary>
public abstract class GuardedMultiTensorFunction<T> : autograd.MultiTensorFunction<T> where T : GuardedMultiTensorFunction<T>, new()
{
    public sealed override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ctx.save_data(ArgumentCount.Key, vars.Length);
        return Forward(ctx, vars);
    }

    public sealed override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads) =>
        BackwardFailure.Guard(ArgumentCount.Of(ctx), () => Backward(ctx, grads));

    protected abstract List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars);
    protected abstract List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> grads);
}

internal static class ArgumentCount
{
    public const string Key = "guarded.arguments";
    public static int Of(autograd.AutogradContext ctx) => (int)ctx.get_data(Key);
}
