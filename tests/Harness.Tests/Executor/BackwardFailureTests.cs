using Harness.Simulator.Specs;
using Harness.Executor.Autograd;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.TensorParallel;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// An exception thrown in a custom function's backward comes out of the backward call as itself; unguarded, it ends
/// the process, since libtorch calls backward from native frames a .NET exception cannot cross.
/// </summary>
public class BackwardFailureTests
{
    public BackwardFailureTests() => TorchRuntime.Initialize(ExecutionDevice.Cpu);

    /// <summary>Doubles in forward; its backward throws while <see cref="Broken"/> is set for the calling thread.</summary>
    private sealed class Doubling : GuardedSingleTensorFunction<Doubling>
    {
        [ThreadStatic] public static bool Broken;
        public override string Name => "doubling";
        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars) => ((Tensor)vars[0]).Times(2);
        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad) =>
            Broken ? throw new InvalidOperationException("backward broke") : [grad.Times(2)];
    }

    private static Tensor GradientOfSum(Tensor x)
    {
        BackwardFailure.Run(() => Doubling.apply(x).sum().backward());
        return x.grad!;
    }

    [Fact]
    public void AnExceptionInBackwardComesOutOfTheBackwardCall()
    {
        using var scope = NewDisposeScope();
        Doubling.Broken = true;
        try
        {
            var e = Assert.Throws<InvalidOperationException>(() => GradientOfSum(ones(3).requires_grad_()));
            Assert.Equal("backward broke", e.Message);
        }
        finally { Doubling.Broken = false; }
        // Nothing is left over: the next backward runs and its gradient is d(sum 2x)/dx = 2.
        Assert.Equal(new float[] { 2, 2, 2 }, GradientOfSum(ones(3).requires_grad_()).data<float>().ToArray());
    }

    [Fact]
    public void ARankFailingWhileAnotherIsInABackwardCollectiveIsReportedNotFatal()
    {
        // Rank 1's backward all-reduces its gradient (Megatron's f operator) and waits for rank 0, which fails instead:
        // the abort reaches rank 1 inside libtorch's backward; the job reports rank 0's error.
        var e = Assert.Throws<RankFailuresException>(() => InProcessJob.Run(2, comm =>
        {
            using var scope = NewDisposeScope();
            if (comm.Rank == 0) throw new InvalidOperationException("rank 0 ran out of data");
            var x = ones(4).requires_grad_();
            BackwardFailure.Run(() => Mappings.CopyToTensorParallelRegion(x, comm).sum().backward());
        }));
        Assert.Equal("rank 0: rank 0 ran out of data", e.Message);
    }
}

/// <summary>On a GPU, backward runs on libtorch's device threads, where no <see cref="BackwardFailure.Run"/> is active: a
/// failure recorded there is the process's and reaches the run that started the backward. Alone: any run would take it.</summary>
[Collection("Alone")]
public class BackwardFailureOffThreadTests
{
    [Fact]
    public void AFailureOnAThreadWithoutARunReachesTheRunOnceAndOnlyOnce()
    {
        List<TorchSharp.torch.Tensor>? handedToLibtorch = null;
        var device = new Thread(() => handedToLibtorch = BackwardFailure.Guard(2, () => throw new InvalidOperationException("device thread broke")));
        device.Start();
        device.Join();
        // One undefined gradient per forward argument, as TorchSharp checks.
        Assert.Equal(new TorchSharp.torch.Tensor?[] { null, null }, handedToLibtorch!);
        var e = Assert.Throws<InvalidOperationException>(() => BackwardFailure.Run(() => { }));
        Assert.Equal("device thread broke", e.Message);
        BackwardFailure.Run(() => { }); // taken: the next backward starts clean
    }
}
