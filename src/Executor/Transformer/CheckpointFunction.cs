using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// Activation recomputation (Chen et al. 2016; Megatron's tensor_parallel.checkpoint): forward runs the function
/// without building a graph and keeps only its inputs; backward runs it again with grad enabled and back-propagates
/// through that fresh graph, which also accumulates the parameter gradients. Used for full recompute (a whole
/// layer) and selective recompute (core attention, Korthikanti et al. 2022).
/// The function must be deterministic (no dropout here: the harness runs without dropout under recompute).
/// Backward runs on libtorch's autograd thread, so it owns its own dispose scope.
/// </summary>
public sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
{
    public override string Name => nameof(CheckpointFunction);

    /// <summary>run(inputs) with only the inputs kept for backward.</summary>
    public static Tensor Apply(Func<Tensor[], Tensor> run, params Tensor[] inputs) =>
        apply(new object[] { run }.Concat(inputs).ToArray());

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var run = (Func<Tensor[], Tensor>)vars[0];
        var inputs = vars.Skip(1).Cast<Tensor>().ToList();
        ctx.save_for_backward(inputs);
        ctx.save_data("run", run);
        // The intermediates of this no-grad pass are freed here, not at the end of the caller's scope:
        // keeping them alive until the micro-batch ends would defeat the purpose.
        using var scope = NewDisposeScope();
        return run(inputs.ToArray()).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var run = (Func<Tensor[], Tensor>)ctx.get_data("run");
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var detached = saved.Select(t => t.detach().requires_grad_(t.requires_grad)).ToArray();
        using (var enable = enable_grad())
        {
            var output = run(detached);
            autograd.backward(new[] { output }, new[] { gradOutput });
        }
        // No gradient for the function argument, then one per input that requires it.
        return GradientHandOver.Return(gradOutput, [null, .. detached.Select(d => d.requires_grad ? d.grad!.MoveToOuterDisposeScope() : null)]);
    }
}
