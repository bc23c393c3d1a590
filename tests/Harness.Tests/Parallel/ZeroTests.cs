using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Training;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// ZeRO 2 (gradients reduce-scattered into each rank's shard after every micro-batch's backward) and ZeRO 3 (weights
/// partitioned too, each unit gathered around its forward and backward) on CPU ranks: the serial run's losses, gradients
/// and final weights within 1e-5 over three AdamW steps, under data, tensor (with sequence), context parallelism and
/// recomputation, with and without the reduction overlapped; ZeRO 3's weights per rank at their fullest measured and held
/// against the simulator's model of them.
/// </summary>
public class ZeroTests
{
    /// <summary>Small enough that ZeRO 2's buckets split the tiny models' weight matrices.</summary>
    private const long BucketSize = 3000;

    private static RunDescription Config(int zero, int dp, int tp = 1, int cp = 1, bool overlap = false) =>
        new(DataParallel: dp, TensorParallel: tp, ContextParallel: cp, SequenceParallel: tp > 1, MicroBatch: 1, GlobalBatch: 2 * dp, ZeroStage: zero,
            Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: overlap), DdpBucketSize: BucketSize);

    [Theory]
    [InlineData(2, 2, false)]
    [InlineData(2, 4, true)]
    [InlineData(3, 2, true)]
    [InlineData(3, 4, false)]
    public void DataParallelMatchesSerial(int zero, int dp, bool overlap) =>
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(zero, dp, overlap: overlap));

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Tp2SequenceParallelMatchesSerial(int zero) =>
        // GPT: biases, learned positions and a tied output layer (ZeRO 3 gathers the embeddings again at the output).
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(zero, dp: 2, tp: 2, overlap: true));

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void OverlappedParamGatherMatchesSerial(int zero) =>
        // ZeRO 2's buckets, ZeRO 3's vectors: all-gathered during the next forward.
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(zero, dp: 2, overlap: true) with { Overlap = new OverlapSpec(GradientReduce: true, ParamGather: true) });

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Cp2MatchesSerial(int zero) => ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(zero, dp: 2, cp: 2));

    [Theory]
    [InlineData(2, RecomputeGranularity.Full, 2)]
    [InlineData(3, RecomputeGranularity.Full, 2)]
    [InlineData(3, RecomputeGranularity.Full, 1)]
    [InlineData(3, RecomputeGranularity.Selective, 1)]
    public void RecomputedMatchesSerial(int zero, RecomputeGranularity granularity, int layersPerGroup) =>
        // Four layers; full recomputation in groups of two makes ZeRO 3 gather two layers as one unit.
        ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 4),
            Config(zero, dp: 2, overlap: true) with { Recompute = new RecomputeSpec(granularity, RecomputeMethod.Uniform, layersPerGroup) });

    [Fact]
    public void Bf16MatchesTheDistributedOptimizer()
    {
        // Mixed precision: bf16 gradients into float32 reduce buckets, float32 master shards, bf16 partitions cast from them.
        // ZeRO 1 folds each micro-batch's bf16 gradients into float32 and reduces once; ZeRO 2 and 3 reduce each micro-batch's
        // in float32: the sums differ in float32's last bits only (measured: losses 1e-6 apart, gradient norms 5e-5), and the
        // bf16 weights cast from the master weights by an ulp where those bits cross a rounding boundary (4.5e-4; bf16 rounds
        // to 2^-9 relative). A step's change is larger: the loss falls by 1.4e-2 a step.
        var spec = Reference.Llama();
        var batches = Reference.Batches(spec, ParallelRun.Steps, 4);
        var zero1 = MixedPrecision(spec, Config(1, dp: 2, overlap: true) with { Precision = Precision.Bf16 }, batches);
        foreach (int zero in new[] { 2, 3 })
        {
            var run = MixedPrecision(spec, Config(zero, dp: 2, overlap: true) with { Precision = Precision.Bf16 }, batches);
            for (int r = 0; r < run.Length; r++)
            {
                Reference.AssertClose(run[r].Losses, zero1[r].Losses, $"ZeRO {zero} rank {r} losses", 1e-4);
                Reference.AssertClose(run[r].Norms, zero1[r].Norms, $"ZeRO {zero} rank {r} gradient norms", 1e-3);
                Reference.AssertClose(run[r].Weights, zero1[r].Weights, $"ZeRO {zero} rank {r} final weights", 4e-3);
            }
        }
        Assert.True(zero1[0].Losses[^1] < zero1[0].Losses[0], "the bf16 run does not train");
    }

    /// <summary>Each rank's losses, gradient norms and final weights (in float32, in the model's order) over <paramref name="batches"/>.</summary>
    private static (float[] Losses, float[] Norms, float[] Weights)[] MixedPrecision(ModelSpec spec, RunDescription config, Tensor[] batches) =>
        InProcessJob.Run<(float[] Losses, float[] Norms, float[] Weights)>(config.WorldSize, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(world.Size, 1, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam);
            var (losses, norms) = (new List<float>(), new List<float>());
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                var (loss, norm) = trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
                losses.Add(loss);
                norms.Add(norm!.Value); // bf16 has no loss scaler: no step is skipped
            }
            trainer.FinishParamSync();
            var weights = Reference.Concatenated(trainer.NamedParameters().Select(n => n.Parameter.to(ScalarType.Float32).data<float>().ToArray()));
            return ([.. losses], [.. norms], weights);
        });

    [Fact]
    public void Zero3HoldsItsPartitionsAndTwoLayersAtMost()
    {
        // Tiny Llama, 4 layers, fp32, d 2: each layer's matrices are one unit of qkv (96 x 32) + proj (32 x 32) + fc1 (96 x 32)
        // + fc2 (32 x 48) = 8704 elements; the embeddings and the output layer 64 x 32 = 2048 each; the vectors (two norms per
        // layer and the final norm, 9 x 32 = 288) stay whole. Units split evenly over d 2, so the partitions are half the
        // matrices. At the fullest moment two layers are gathered (the one computing, the next prefetched: 2 x 8704 beats
        // a layer beside the embeddings or the output layer, 8704 + 2048).
        var spec = Reference.Llama(layers: 4);
        const int d = 2;
        var config = Config(3, d);
        double layer = 8704, ends = 2048, vectors = 9 * 32, matrices = 4 * layer + 2 * ends;
        double expected = 4 * (matrices / d + vectors + 2 * layer);
        var measured = PeakResidentWeightBytes(spec, config);
        Assert.All(measured, m => Assert.Equal(expected, m));
        // The simulator's model (ModelState: 1/d of all weights, plus ZeroWorkingSet's two layers with their norms and the larger
        // end, the output layer with the final norm) holds more, by what it adds that the schedule never holds beside two
        // layers (that end, the two layers' norms), less the vectors, which the executor keeps whole.
        double modeled = ModelState.Bytes(ModelState.RankParameters(spec, config, 0), config).Weights + ModelState.ZeroWorkingSet(spec, config, 0).Weights;
        Assert.Equal(modeled - 4 * (ends + 32 + 2 * 2 * 32) + 4 * vectors * (1 - 1.0 / d), expected, 6);
    }

    [Fact]
    public void CollectivesComeWithEveryMicroBatchAsDeepSpeedMakesThem()
    {
        // Two micro-batches per step. ZeRO 2 reduce-scatters ZeRO 1's buckets once per micro-batch instead of once per step, and
        // all-gathers them once after the step, as ZeRO 1 does. ZeRO 3 (tiny Llama, 2 layers: units embeddings, layer 0,
        // layer 1, output layer, and the vectors) gathers per micro-batch the embeddings, both layers and the output layer in
        // the forward and both layers again in the backward (the output layer is kept from the forward, the embeddings'
        // backward needs no weights): 6, so 12 per step, and the vectors once after the step; it reduce-scatters its 5
        // buckets per micro-batch.
        var zero1 = Collectives(Config(1, dp: 2) with { GlobalBatch = 4 });
        var zero2 = Collectives(Config(2, dp: 2) with { GlobalBatch = 4 });
        var zero3 = Collectives(Config(3, dp: 2) with { GlobalBatch = 4 });
        Assert.True(zero1["dp-cp reduce-scatter"] > 2, "the buckets do not split the model");
        Assert.Equal(2 * zero1["dp-cp reduce-scatter"], zero2["dp-cp reduce-scatter"]);
        Assert.Equal(zero1["dp-cp all-gather"], zero2["dp-cp all-gather"]);
        Assert.Equal(2 * 5, zero3["dp-cp reduce-scatter"]);
        Assert.Equal(2 * 6 + 1, zero3["dp-cp all-gather"]);
    }

    /// <summary>How many of each collective rank 0 makes in the second step of <paramref name="config"/> (tiny Llama).</summary>
    private static Dictionary<string, int> Collectives(RunDescription config)
    {
        var spec = Reference.Llama();
        var batch = Reference.Batches(spec, 1, config.GlobalBatch)[0];
        var logs = InProcessJob.Run(config.WorldSize, world =>
        {
            var log = new List<string>();
            using var groups = ProcessGroups.Create(new RecordingCommunicator(world, log), RankOrder.For(world.Size, 1, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam);
            using var scope = NewDisposeScope();
            trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
            log.Clear();
            trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
            return log;
        });
        return logs[0].GroupBy(l => l).ToDictionary(g => g.Key, g => g.Count());
    }

    /// <summary>Each rank's most bytes under its parameters over three steps of <paramref name="config"/>.</summary>
    private static long[] PeakResidentWeightBytes(ModelSpec spec, RunDescription config)
    {
        var batches = Reference.Batches(spec, ParallelRun.Steps, config.GlobalBatch);
        return InProcessJob.Run(config.WorldSize, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(world.Size, 1, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam);
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
            }
            return trainer.PeakResidentWeightBytes!.Value;
        });
    }
}

/// <summary>
/// Megatron-FSDP (--use-megatron-fsdp) on CPU ranks: its sharding strategies run by the same gathers and reduce-scatters as
/// ZeRO's stages, one transformer layer a unit, and version 1 runs them with pipeline parallelism, each model chunk with its
/// own gathers (interleaved too); the serial run's losses, gradients and final weights within 1e-5 over three AdamW steps.
/// </summary>
public class MegatronFsdpRunTests
{
    private static RunDescription Config(int stage, int dp, int pp, int? layersPerVirtualStage = null) =>
        new(DataParallel: dp, PipelineParallel: pp, LayersPerVirtualStage: layersPerVirtualStage, MicroBatch: 1, GlobalBatch: 4 * dp,
            ZeroStage: stage, Precision: Precision.Fp32, Fsdp: new MegatronFsdp());

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void EveryStrategyMatchesSerialWithPipelineParallelism(int stage) =>
        ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 4), Config(stage, dp: 2, pp: 2));

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void InterleavedPipelinesGatherEachChunkOnItsOwn(int stage) =>
        ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 4), Config(stage, dp: 2, pp: 2, layersPerVirtualStage: 1));

    [Theory]
    [InlineData(2, null)]
    [InlineData(3, null)]
    [InlineData(3, 1)]
    public void ATiedEmbeddingAcrossStagesMatchesSerial(int stage, int? layersPerVirtualStage) =>
        // GPT: the last stage's copy of the word embedding is its output layer's unit; both copies' gradients are summed
        // every micro-batch, before each copy's reduce-scatter.
        ParallelRun.AssertMatchesSerial(Reference.Gpt(layers: 4), Config(stage, dp: 2, pp: 2, layersPerVirtualStage));
}
