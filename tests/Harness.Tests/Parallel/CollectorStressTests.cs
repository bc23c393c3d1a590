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

    /// <summary>The newer paths under the same collector: ZeRO 3's gathered and freed weights, Ulysses' all-to-alls, uneven
    /// pipeline stages.</summary>
    [Theory]
    [InlineData("zero3")]
    [InlineData("ulysses")]
    [InlineData("uneven")]
    public void NewerLayoutsMatchSerialWhileTheCollectorRuns(string layout)
    {
        using var collection = new ConstantCollection();
        var config = layout switch
        {
            "zero3" => new RunDescription(DataParallel: 2, TensorParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4, ZeroStage: 3,
                Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: true)),
            "ulysses" => new RunDescription(DataParallel: 2, ContextParallel: 2, MicroBatch: 1, GlobalBatch: 4,
                ContextParallelComm: ContextParallelCommType.A2a, Precision: Precision.Fp32),
            _ => new RunDescription(DataParallel: 1, PipelineParallel: 2, MicroBatch: 1, GlobalBatch: 4, Precision: Precision.Fp32,
                AccountForEmbeddingInPipelineSplit: true, AccountForLossInPipelineSplit: true),
        };
        ParallelRun.AssertMatchesSerial(Reference.Llama(), config);
    }
}
