using Harness.Executor.Native;
using Harness.Executor.Offload;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>One chunk's offload on its own: the storages of what it selects are emptied between the end of
/// the offload and the reload, the tensors autograd saved read the same values after, and the gradients are those without.</summary>
public class ChunkOffloadTests
{
    private const long MiB = 1 << 20;

    /// <summary>y = sum(exp(a) · silu(b)) over 1 MiB tensors: exp saves its output, the product both factors, silu its input.</summary>
    private static (Tensor GradA, Tensor GradB, long[] Between) Run(double alpha)
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        using var g = new Generator(7);
        var a = randn([MiB / 4], generator: g).requires_grad_();
        var b = randn([MiB / 4], generator: g).requires_grad_();
        var saved = new SavedActivations();
        Tensor y, e, s;
        using (saved.Record())
        {
            e = SavedActivations.Save(a.exp());
            s = SavedActivations.Save(nn.functional.silu(SavedActivations.Save(b)));
            y = (e * s).sum();
        }
        long[] between = [];
        if (alpha > 0)
        {
            using var offload = new ChunkOffload(saved, alpha, HostMemoryLink.Instance);
            offload.End();
            between = [StorageBytes.Of(e), StorageBytes.Of(b), StorageBytes.Of(s)];
            offload.BeginReload();
            offload.EndReload();
            y.backward();
        }
        else
        {
            saved.Dispose();
            y.backward();
        }
        return (a.grad!, b.grad!, between);
    }

    /// <summary>
    /// A host link whose copies happen only at the fence, as a GPU's copy stream runs them some time after they are issued:
    /// a copy reads its source then, so a source released before the fence is read after its release (here: disposed, so
    /// the copy throws; on a GPU its memory is handed out again and overwritten, and the reloaded activations are wrong).
    /// </summary>
    private sealed class DeferredHostLink : IHostLink
    {
        private readonly List<(Tensor Source, Tensor Target)> queued = [];

        public void AfterCompute() { }

        public Tensor ToHost(Tensor source) => Queue(source);

        public void ToDeviceInto(Tensor source, Tensor target) => queued.Add((source.view(target.shape), target));

        private Tensor Queue(Tensor source)
        {
            var target = empty(source.shape, source.dtype).DetachFromDisposeScope();
            queued.Add((source, target));
            return target;
        }

        public void Fence()
        {
            using var _ = no_grad();
            foreach (var (source, target) in queued) target.copy_(source);
            queued.Clear();
        }

        public void Dispose() { }
    }

    [Fact]
    public void CopiesThatRunLateReadSourcesKeptUntilTheirFence()
    {
        // exp's output is saved by exp and, transposed (a non-contiguous view of it, offloaded through a flat copy), by the product.
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        (Tensor, Tensor) Grads(IHostLink? link)
        {
            using var g = new Generator(11);
            var a = randn([512, 512], generator: g).requires_grad_();
            var b = randn([512, 512], generator: g).requires_grad_();
            var saved = new SavedActivations();
            Tensor y;
            using (saved.Record())
            {
                var e = SavedActivations.Save(a.exp());
                y = (SavedActivations.Save(e.t()) * b).sum();
            }
            if (link is null) saved.Dispose();
            else
            {
                using var offload = new ChunkOffload(saved, 1, link);
                offload.End();
                offload.BeginReload();
                offload.EndReload();
                // Back in place, the storages are autograd's alone: the offload keeps neither them nor its copies.
                Assert.Equal(0, offload.HeldBytes);
            }
            y.backward();
            return (a.grad!, b.grad!);
        }
        var (a0, b0) = Grads(null);
        var (a1, b1) = Grads(new DeferredHostLink());
        Assert.True(a0.equal(a1).all().item<bool>() && b0.equal(b1).all().item<bool>());
    }

    [Fact]
    public void AChunkIsReloadedOnce()
    {
        // A second reload would copy host buffers the link may have handed to another chunk's offload since.
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        var a = randn([MiB / 4]).requires_grad_();
        var saved = new SavedActivations();
        using (saved.Record()) SavedActivations.Save(a.exp());
        using var offload = new ChunkOffload(saved, 1, HostMemoryLink.Instance);
        offload.End();
        offload.BeginReload();
        Assert.Throws<InvalidOperationException>(offload.BeginReload);
    }

    [Fact]
    public void SelectedStoragesAreEmptiedAndTheGradientsAreTheSameBits()
    {
        var (a0, b0, _) = Run(0);
        // Three 1 MiB tensors: 0.5 of 3 MiB rounds up to 2 MiB, the first two in the order (contiguous, equal sizes: as saved: exp's output, then silu's input).
        var (a1, b1, between) = Run(0.5);
        Assert.Equal([0L, 0L, MiB], between);
        Assert.True(a0.equal(a1).all().item<bool>() && b0.equal(b1).all().item<bool>());
        var (a2, b2, all) = Run(1);
        Assert.Equal([0L, 0L, 0L], all);
        Assert.True(a0.equal(a2).all().item<bool>() && b0.equal(b2).all().item<bool>());
    }
}
