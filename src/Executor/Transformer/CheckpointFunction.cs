using Harness.Executor.Autograd;
using Harness.Executor.Offload;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// Activation recomputation (Chen et al. 2016; Megatron's tensor_parallel.checkpoint): forward runs the function
/// without building a graph and keeps only its inputs; backward runs it again with grad enabled and back-propagates
/// through that fresh graph, which also accumulates the parameter gradients. Used for full recompute (a whole
/// layer) and selective recompute (core attention, Korthikanti et al. 2022).
/// Dropout inside the function draws from <see cref="DropoutRng"/>'s streams: forward notes where they are, backward
/// rewinds them there for the recomputation, so it draws the same masks, and puts them back after (Megatron's
/// CheckpointFunction does the same with its CUDA RNG tracker).
/// Backward runs on libtorch's autograd thread, so it owns its own dispose scope.
/// </summary>
public sealed class CheckpointFunction : GuardedSingleTensorFunction<CheckpointFunction>
{
    public override string Name => nameof(CheckpointFunction);

    /// <summary>run(inputs) with only the inputs kept for backward; <paramref name="dropout"/>: the streams its dropout draws from.</summary>
    public static Tensor Apply(Func<Tensor[], Tensor> run, DropoutRng? dropout, params Tensor[] inputs) =>
        apply(new object[] { run, (object?)dropout ?? false }.Concat(inputs).ToArray());

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var run = (Func<Tensor[], Tensor>)vars[0];
        var inputs = vars.Skip(2).Cast<Tensor>().ToList();
        ctx.save_for_backward(inputs);
        ctx.save_data("run", run);
        ctx.save_data("rng", vars[1]);
        if (vars[1] is DropoutRng rng) ctx.save_data("draws", rng.Draws);
        // The intermediates of this no-grad pass are freed here, not at the end of the caller's scope:
        // keeping them alive until the micro-batch ends would defeat the purpose.
        // Nor are they what autograd saves, for activation offload to record.
        using var scope = NewDisposeScope();
        using var paused = SavedActivations.Pause();
        return run(inputs.ToArray()).MoveToOuterDisposeScope();
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var run = (Func<Tensor[], Tensor>)ctx.get_data("run");
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var detached = saved.Select(t => t.detach().requires_grad_(t.requires_grad)).ToArray();
        var rng = ctx.get_data("rng") as DropoutRng;
        var now = rng?.Draws;
        if (rng is not null) rng.Rewind(((long, long))ctx.get_data("draws"));
        using (var enable = enable_grad())
        {
            var output = run(detached);
            BackwardFailure.Run(() => autograd.backward(new[] { output }, new[] { gradOutput }));
        }
        if (now is { } draws) rng!.Rewind(draws);
        // No gradient for the function nor the streams, then one per input that requires it.
        return GradientHandOver.Return(gradOutput, [null, null, .. detached.Select(d => d.requires_grad ? d.grad!.MoveToOuterDisposeScope() : null)]);
    }
}
