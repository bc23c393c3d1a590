using static TorchSharp.torch;

namespace Harness.Executor.Autograd;

/// <summary>
/// The base of the executor's custom autograd functions with one output: forward notes how many arguments it took, and
/// backward runs under <see cref="BackwardFailure.Guard"/>, so an exception in it fails the step instead of the process,
/// and then lets go of what forward saved (<see cref="SavedTensors.Release"/>).
/// </summary>
public abstract class GuardedSingleTensorFunction<T> : autograd.SingleTensorFunction<T> where T : GuardedSingleTensorFunction<T>, new()
{
    /// <summary>TorchSharp's apply, then the node's copies of the outputs released (<see cref="OutputCache"/>).</summary>
    protected static new Tensor apply(params object[] vars)
    {
        var output = autograd.SingleTensorFunction<T>.apply(vars);
        OutputCache.Release();
        return output;
    }

    public sealed override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ctx.save_data(ArgumentCount.Key, vars.Length);
        var output = Forward(ctx, vars);
        OutputCache.Applying(ctx);
        return output;
    }

    public sealed override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad) =>
        SavedTensors.Release(ctx, BackwardFailure.Guard(ArgumentCount.Of(ctx), () => Backward(ctx, grad)));

    protected abstract Tensor Forward(autograd.AutogradContext ctx, object[] vars);
    protected abstract List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad);
}

/// <summary>The same for functions with several outputs.</summary>
public abstract class GuardedMultiTensorFunction<T> : autograd.MultiTensorFunction<T> where T : GuardedMultiTensorFunction<T>, new()
{
    /// <summary>TorchSharp's apply, then the node's copies of the outputs released (<see cref="OutputCache"/>).</summary>
    protected static new List<Tensor> apply(params object[] vars)
    {
        var outputs = autograd.MultiTensorFunction<T>.apply(vars);
        OutputCache.Release();
        return outputs;
    }

    public sealed override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ctx.save_data(ArgumentCount.Key, vars.Length);
        var outputs = Forward(ctx, vars);
        OutputCache.Applying(ctx);
        return outputs;
    }

    public sealed override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads) =>
        SavedTensors.Release(ctx, BackwardFailure.Guard(ArgumentCount.Of(ctx), () => Backward(ctx, grads)));

    protected abstract List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars);
    protected abstract List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> grads);
}

internal static class ArgumentCount
{
    public const string Key = "guarded.arguments";
    public static int Of(autograd.AutogradContext ctx) => (int)ctx.get_data(Key);
}
