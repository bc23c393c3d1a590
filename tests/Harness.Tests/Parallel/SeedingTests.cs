using Harness.Executor.Distributed;
using Harness.Executor.Training;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

public class SeedingTests
{
    public static TheoryData<string, int, RunDescription> Layouts => new()
    {
        { "tp 2 x pp 2 x dp 2", 8, new RunDescription(DataParallel: 2, TensorParallel: 2, PipelineParallel: 2, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32) },
        { "pp 2 interleaved, 1 layer per virtual stage", 2, new RunDescription(PipelineParallel: 2, LayersPerVirtualStage: 1, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32) },
        { "pp 2 uneven, 1 layer on the first stage", 2, new RunDescription(PipelineParallel: 2, LayersInFirstPipelineStage: 1, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32) },
        { "tp 2 sp x dp 2 zero 3", 4, new RunDescription(DataParallel: 2, TensorParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 2, ZeroStage: 3, Precision: Precision.Fp32, GradientAccumulationFusion: false) },
        { "cp 2", 2, new RunDescription(ContextParallel: 2, MicroBatch: 1, GlobalBatch: 1, Precision: Precision.Fp32) },
    };

    /// <summary>Every rank of every layout holds exactly its slice of the serial model from the same seed (WeightInit): the
    /// tensor-parallel slice of the layers its pipeline stage (or virtual stages) holds, under their serial names.</summary>
    [Theory]
    [MemberData(nameof(Layouts))]
    public void RanksBuiltFromASeedHoldTheSlicesOfTheSerialModelFromThatSeed(string layout, int world, RunDescription config)
    {
        TorchRuntime.Initialize();
        var spec = Reference.Gpt(layers: 4);
        const int seed = 42;
        using var serial = new GptModel(new TransformerConfig(spec, CPU, ScalarType.Float32, SerialTensorParallel.Instance, InitSeed: seed));
        var full = serial.named_parameters().ToDictionary(n => n.name, n => n.parameter.data<float>().ToArray());
        // Concurrent ranks: each draws its weights from generators of its own.
        var ranks = InProcessJob.Run(world, comm =>
        {
            using var groups = ProcessGroups.Create(comm, RankOrder.For(world, config.TensorParallel, config.ContextParallel, config.PipelineParallel));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, seed, Reference.Adam);
            trainer.FinishParamSync(); // ZeRO 3 gathers its units
            return (groups.TensorRank, Weights: trainer.NamedParameters().ToDictionary(n => n.SerialName, n => n.Parameter.data<float>().ToArray()));
        });
        Assert.Equal(full.Keys.Order(), ranks.SelectMany(r => r.Weights.Keys).Distinct().Order());
        foreach (var (tpRank, weights) in ranks)
            foreach (var (name, w) in weights)
                Assert.True(Reference.ShardOf(name, full[name], spec, tpRank, config.TensorParallel).SequenceEqual(w), $"{layout}: {name} on tensor rank {tpRank}");
    }

    /// <summary>Vocabulary tables padded to different sizes (Megatron's 128·t) agree on every row both hold, and a different seed
    /// or layer draws other weights.</summary>
    [Fact]
    public void PaddedTablesAgreeOnTheRowsTheyShareAndKeysDrawIndependentWeights()
    {
        TorchRuntime.Initialize();
        using var serial = WeightInit.Normal(5, new(WeightRole.WordEmbeddings), 0.02, [128, 8], ScalarType.Float32);
        using var padded = WeightInit.Normal(5, new(WeightRole.WordEmbeddings), 0.02, [256, 8], ScalarType.Float32);
        using var unpadded = WeightInit.Normal(5, new(WeightRole.WordEmbeddings), 0.02, [101, 8], ScalarType.Float32);
        Assert.True(padded.narrow(0, 0, 128).equal(serial).all().item<bool>());
        Assert.True(serial.narrow(0, 0, 101).equal(unpadded).all().item<bool>());
        using var layer0 = WeightInit.Normal(5, new(WeightRole.LinearQkv, 0), 0.02, [16, 8], ScalarType.Float32);
        using var layer1 = WeightInit.Normal(5, new(WeightRole.LinearQkv, 1), 0.02, [16, 8], ScalarType.Float32);
        using var otherSeed = WeightInit.Normal(6, new(WeightRole.LinearQkv, 0), 0.02, [16, 8], ScalarType.Float32);
        Assert.False(layer0.equal(layer1).all().item<bool>());
        Assert.False(layer0.equal(otherSeed).all().item<bool>());
        Assert.InRange(layer0.std().item<float>(), 0.015, 0.025);
    }
}

public class MixedPrecisionParallelTests
{
    [Fact]
    public void Bf16DistributedOptimizerKeepsNoFullMasterCopyTrainsAndKeepsReplicasEqual()
    {
        TorchRuntime.Initialize();
        var spec = Reference.Llama();
        var batches = Reference.Batches(spec, 4, batch: 4);
        var config = new RunDescription(DataParallel: 2, MicroBatch: 1, GlobalBatch: 4, ZeroStage: 1, Precision: Precision.Bf16, GradientAccumulationFusion: false);
        var ranks = InProcessJob.Run(2, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(2, 1, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, 3, Reference.Adam with { ClipGrad = 1.0 });
            Assert.Equal(0, trainer.Buffer.Master.numel()); // the optimizer's 1/d shard is the only float32 copy
            var losses = batches.Select(batch => trainer.Step(1e-2, i =>
            {
                var rows = batch.narrow(0, (i * 2 + groups.DataRank) * 1, 1);
                return (rows[.., ..spec.SeqLength], rows[.., 1..]);
            }).Loss).ToArray();
            return (losses, trainer.Buffer.Params.to(ScalarType.Float32).data<float>().ToArray());
        });
        Assert.Equal(ranks[0].Item1, ranks[1].Item1);
        Assert.Equal(ranks[0].Item2, ranks[1].Item2);
        Assert.True(ranks[0].Item1[^1] < ranks[0].Item1[0] - 0.05, $"bf16 does not train: {string.Join(", ", ranks[0].Item1)}");
    }
}
