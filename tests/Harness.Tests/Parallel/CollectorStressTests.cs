using Harness.Executor.Transformer;
using Harness.Simulator.Specs;

namespace Harness.Tests.Parallel;

/// <summary>
/// A layout trained while another thread collects garbage without pause: every native handle the executor passes to
/// libtorch (tensors, Scalars, generators) must stay alive until libtorch has read it, or a finalizer frees it first.
/// </summary>
[Collection("Alone")]
public class CollectorStressTests
{
    [Fact]
    public void Tp2Dp2WithEverythingOnMatchesSerialWhileTheCollectorRuns()
    {
        using var collection = new ConstantCollection();
        // Tensor-parallel mappings and sequence parallelism, the distributed optimizer's overlapped bucket
        // reduce-scatters (gradient hooks in backward), selective recomputation, and the scripted kernels' scalars.
        var config = new RunDescription(DataParallel: 2, TensorParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4,
            ZeroStage: 1, Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: true));
        ParallelRun.AssertMatchesSerial(Reference.Llama(), config with { Recompute = RecomputeSpec.Selective, DdpBucketSize = 3000 });
    }
}
