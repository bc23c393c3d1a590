using Harness.Simulator.Specs;
using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;

// References written with libtorch's own matmul (Native.MatrixProduct says why the executor does not call it; a test's small
// CPU tensors do not run out of memory).
#pragma warning disable RS0030

namespace Harness.Tests.Executor;

public class TorchRuntimeTests
{
    [Fact]
    public void CpuTensorsAndAutogradWork()
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        using var scope = NewDisposeScope();
        // y = sum(x^3 + 2x) at x = [1, 2, 3]: dy/dx = 3x^2 + 2 = [5, 14, 29].
        var x = tensor(new double[] { 1, 2, 3 }, requires_grad: true);
        using var three = 3.ToScalar();
        var y = x.pow(three).Plus(x.Times(2)).sum();
        y.backward();
        Assert.Equal(1 + 2 + 8 + 4 + 27 + 6, y.item<double>());
        Assert.Equal(new double[] { 5, 14, 29 }, x.grad!.data<double>().ToArray());
        // A matmul against hand arithmetic: [[1,2],[3,4]] @ [[5],[6]] = [[17],[39]].
        var m = tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2).matmul(tensor(new float[] { 5, 6 }).reshape(2, 1));
        Assert.Equal(new float[] { 17, 39 }, m.data<float>().ToArray());
    }
}
