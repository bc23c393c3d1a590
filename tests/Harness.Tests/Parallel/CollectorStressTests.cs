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

    /// <summary>The single-device trainer under the same collector: training, a checkpoint saved, and a run resumed from it,
    /// with the same losses as without the collector.</summary>
    [Fact]
    public void OneDeviceSavesAndResumesWhileTheCollectorRuns()
    {
        var model = Harness.Executor.Training.DefaultRun.Model with { SeqLength = 32 };
        var description = new RunDescription(MicroBatch: 4, GlobalBatch: 4, Precision: Precision.Fp32);
        string ckpt = Path.Combine(Path.GetTempPath(), $"harness-stress-{Guid.NewGuid():N}");
        // Four iterations throughout (the sampler's order depends on the iterations asked for); the first run stops at 2.
        RunSettings Settings(long? exitInterval = null, string? save = null, string? load = null) =>
            new(TrainIters: 4, Seed: 7, DataPath: DataBlend.Single(Harness.Executor.Training.DefaultRun.DataPath), Save: save, Load: load, LogInterval: 1,
                ExitInterval: exitInterval);
        IReadOnlyList<double> Losses(RunSettings settings) =>
            new Harness.Executor.Training.TrainingRun(model, description, settings, Path.Combine(Path.GetTempPath(), $"harness-stress-{Guid.NewGuid():N}"), _ => { })
                .RunSingleDevice().Select(r => r.Loss).ToList();
        var straight = Losses(Settings());
        using var collection = new ConstantCollection();
        Assert.Equal(straight.Take(2), Losses(Settings(exitInterval: 2, save: ckpt)));
        Assert.Equal(straight.Skip(2), Losses(Settings(load: ckpt)));
    }
}
