using Harness.Executor.Native;
using Harness.Simulator.Specs;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>Freeing a flat tensor's storage frees the parameters that are its views, and refilling it before backward gives
/// backward those weights: ZeRO 3's release and re-gather.</summary>
public class StorageBytesTests
{
    [Fact]
    public void FreedStorageRefilledBeforeBackwardGivesTheGradientsOfTheWeights()
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        using var scope = NewDisposeScope();
        var flat = zeros(6);
        var w = new Parameter(zeros(2, 3));
        using (no_grad())
        {
            w.set_(flat.narrow(0, 0, 6).view(2, 3));
            flat.copy_(tensor(new float[] { 1, 2, 3, 4, 5, 6 }));
        }
        // y = sum(x·Wᵀ) for x = [1, 1, 1]: autograd keeps Wᵀ, a view of the flat storage, for dy/dx.
        var x = tensor(new float[] { 1, 1, 1 }, requires_grad: true);
        var y = nn.functional.linear(x.reshape(1, 3), w).sum();
        Assert.Equal(24, StorageBytes.Of(flat));
        StorageBytes.Resize(flat, 0);
        Assert.Equal(0, StorageBytes.Of(w));
        StorageBytes.Resize(flat, 24);
        using (no_grad()) flat.copy_(tensor(new float[] { 1, 2, 3, 4, 5, 6 }));
        y.backward();
        // dy/dx = column sums of W = [5, 7, 9]; dy/dW = ones.
        Assert.Equal(new float[] { 5, 7, 9 }, x.grad!.data<float>().ToArray());
        Assert.Equal(new float[] { 1, 1, 1, 1, 1, 1 }, w.grad!.data<float>().ToArray());
        w.grad = null;
        Assert.Null(w.grad);
    }
}
