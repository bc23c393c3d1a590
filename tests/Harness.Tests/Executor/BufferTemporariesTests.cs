using System.Runtime;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// A tensor TorchSharp makes and the code drops is freed by the finalizer, on its thread and at a time of the collector's
/// choosing, and TorchSharp hands libtorch only its native handle: a view dropped while a call still reads it (the narrow
/// under a view, the target of a copy_ once the JIT inlines copy_) is freed mid-call. In-process test runs crashed so,
/// in torch::autograd::impl::bump_version under ParamAndGradBuffer's constructor. Building the buffer therefore leaves
/// nothing to the finalizer: with no collection in between, the tensors alive after building and disposing a buffer
/// are exactly those alive before. Alone: the count is the process's.
/// </summary>
[Collection("Alone")]
public class BufferTemporariesTests
{
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void BuildingTheFlatBufferLeavesNoTensorToTheFinalizer(ScalarType dtype)
    {
        TorchRuntime.Initialize();
        using var model = new GptModel(new TransformerConfig(ModelTests.Tiny(), CPU, dtype, SerialTensorParallel.Instance, InitSeed: 1));
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before, after;
        Assert.True(GC.TryStartNoGCRegion(16 << 20), "a collection ran before the region started");
        try
        {
            before = Tensor.TotalCount;
            new ParamAndGradBuffer(model, dtype).Dispose();
            after = Tensor.TotalCount;
        }
        finally
        {
            if (GCSettings.LatencyMode == GCLatencyMode.NoGCRegion) GC.EndNoGCRegion();
        }
        Assert.Equal(before, after);
    }
}
