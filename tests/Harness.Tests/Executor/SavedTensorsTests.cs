using System.Runtime.InteropServices;
using Harness.Executor.Autograd;
using Harness.Executor.Native;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>A custom function's saved tensors are let go once its backward has run, while the graph is still alive, as
/// libtorch's own nodes let theirs go (<see cref="SavedTensors"/>).</summary>
public class SavedTensorsTests
{
    /// <summary>y = 3x, saving 2x (a storage of its own) for backward, which reads it back.</summary>
    private sealed class Triple : GuardedSingleTensorFunction<Triple>
    {
        [ThreadStatic] public static Tensor? Saved;

        public override string Name => "test_triple";

        public static Tensor Apply(Tensor x) => apply(x);

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var x = (Tensor)vars[0];
            Saved = x.add(x, HeldScalars.One);
            ctx.save_for_backward([Saved]);
            return Saved.add(x, HeldScalars.One);
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
        {
            using var saved = ctx.get_saved_variables()[0];
            Assert.Equal(grad.shape, saved.shape);
            return GradientHandOver.Return(grad, grad.add(grad, HeldScalars.One).add(grad, HeldScalars.One));
        }
    }

    /// <summary>How many references hold the tensor <paramref name="t"/> (its TensorImpl, which a saved variable shares): the
    /// first 32-bit count after the vtable pointer (c10/util/intrusive_ptr.h, intrusive_ptr_target).</summary>
    private static int References(Tensor t) => Marshal.ReadInt32(Marshal.ReadIntPtr(t.Handle) + 8);

    [Fact]
    public void BackwardReleasesWhatForwardSavedWhileTheGraphLives()
    {
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        var x = randn(1024).requires_grad_();
        var y = Triple.Apply(x);
        var saved = Triple.Saved!;
        int held = References(saved);
        BackwardFailure.Run(() => y.sum().backward());
        Assert.Equal(held - 1, References(saved)); // the node's SavedVariable is gone; y and its graph are not
        Assert.Equal(3f, x.grad!.mean().item<float>(), 6);
        Assert.False(y.IsInvalid);
    }
}
