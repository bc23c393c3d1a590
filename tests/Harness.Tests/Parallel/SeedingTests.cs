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
    [Fact]
    public void RanksBuiltFromASeedHoldTheSlicesOfTheSerialModelFromThatSeed()
    {
        TorchRuntime.Initialize();
        var spec = Reference.Gpt();
        const int seed = 42;
        using var generator = new Generator(seed);
        using var serial = new GptModel(new TransformerConfig(spec, CPU, ScalarType.Float32, SerialTensorParallel.Instance, InitGenerator: generator));
        var full = serial.named_parameters().ToDictionary(n => n.name, n => n.parameter.data<float>().ToArray());
        var config = new RunDescription(DataParallel: 2, TensorParallel: 2, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32);
        // Four concurrent ranks (tensor 2 x data 2): each draws its weights from its own generator.
        var ranks = InProcessJob.Run(4, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(4, 2, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, seed, Reference.Adam);
            return (groups.TensorRank, Weights: trainer.NamedParameters().ToDictionary(n => n.SerialName, n => n.Parameter.data<float>().ToArray()));
        });
        foreach (var (tpRank, weights) in ranks)
            foreach (var (name, w) in weights)
                Assert.Equal(Reference.ShardOf(name, full[name], spec, tpRank, 2), w);
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
