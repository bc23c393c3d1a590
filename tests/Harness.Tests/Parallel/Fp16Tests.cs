using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Training;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// fp16 with Megatron's loss scaler on CPU ranks (libtorch's CPU kernels run every operator of the model in Half): an
/// overflow is skipped on every rank of every layout with the weights and Adam's state untouched while the scale backs
/// off; the gradients are unscaled before the norm and clipping; and parallel fp16 layouts match the one-rank fp16 run.
/// </summary>
public class Fp16Tests
{
    /// <summary>What one rank saw: per step the loss, the norm (null: skipped) and the scale after it; Adam's steps; the final weights (float32 of the fp16 ones) by serial name.</summary>
    private sealed record RankRun(float[] Losses, float?[] Norms, double[] Scales, long AdamSteps, Dictionary<string, float[]> Final);

    private static RunDescription Config(Precision precision = Precision.Fp16, int dp = 1, int tp = 1, int pp = 1, int cp = 1, int zero = 0) =>
        new(DataParallel: dp, TensorParallel: tp, PipelineParallel: pp, ContextParallel: cp, MicroBatch: 1, GlobalBatch: 4 * dp, ZeroStage: zero,
            Precision: precision, GradientsInFp32: true, ContextParallelComm: ContextParallelCommType.P2p);

    private static RankRun[] Train(ModelSpec spec, RunDescription config, LossScaleSettings scaling, Dictionary<string, float[]> initial, Tensor[] batches) =>
        InProcessJob.Run(config.WorldSize, world =>
        {
            var layout = RankOrder.For(world.Size, config.TensorParallel, config.ContextParallel, config.PipelineParallel);
            using var groups = ProcessGroups.Create(world, layout);
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam, scaling);
            trainer.LoadWeights((name, p) => tensor(Reference.ShardOf(name, initial[name], spec, groups.TensorRank, config.TensorParallel)).view(p.shape));
            var (losses, norms, scales) = (new List<float>(), new List<float?>(), new List<double>());
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                var (loss, norm) = trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength), losses.Count);
                losses.Add(loss);
                norms.Add(norm);
                scales.Add(trainer.GradScaler?.Scale ?? 1);
            }
            trainer.FinishParamSync();
            var final = trainer.NamedParameters().ToDictionary(n => n.SerialName, n => n.Parameter.to(ScalarType.Float32).data<float>().ToArray());
            return new RankRun([.. losses], [.. norms], [.. scales], trainer.Optimizer.Step, final);
        });

    public static TheoryData<string> Layouts() => new("serial", "dp2", "dp2-distributed-optimizer", "dp2-distributed-optimizer-overlapped", "dp2-zero2", "dp2-zero3",
        "tp2", "pp2", "cp2");

    /// <summary>GPT (biases, LayerNorm, a tied embedding, which pipeline stages share); under context parallelism Llama
    /// (rotary positions, which context parallelism needs).</summary>
    private static ModelSpec Model(string layout) => layout == "cp2" ? Reference.Llama() : Reference.Gpt();

    private static RunDescription Layout(string name) => name switch
    {
        "dp2" => Config(dp: 2),
        "dp2-distributed-optimizer" => Config(dp: 2, zero: 1),
        // A skipped step still starts the next forward's all-gathers, of the unchanged master weights.
        "dp2-distributed-optimizer-overlapped" => Config(dp: 2, zero: 1) with { Overlap = new OverlapSpec(GradientReduce: true, ParamGather: true) },
        // Every micro-batch's scaled gradients reduce-scattered into the shards, unscaled there before the step.
        "dp2-zero2" => Config(dp: 2, zero: 2) with { Overlap = new OverlapSpec(GradientReduce: true) },
        "dp2-zero3" => Config(dp: 2, zero: 3),
        "tp2" => Config(tp: 2),
        "pp2" => Config(pp: 2),
        "cp2" => Config(cp: 2),
        _ => Config(),
    };

    /// <summary>
    /// Megatron's default initial scale, 2^32, overflows fp16 at once: the logits' gradient is about 1/(micro-batches x b x s)
    /// = 1/64 of the unit softmax error, 2^26 once scaled, far above fp16's 65504. Three steps are skipped on every rank:
    /// the scale goes 2^32 (hysteresis 2 spends one), 2^31, 2^30; no norm; Adam took no step; every weight is the initial
    /// fp16 weight to the bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Layouts))]
    public void AnInjectedOverflowIsSkippedOnEveryRankWithTheWeightsUntouchedAndTheScaleBacksOff(string layout)
    {
        var spec = Model(layout);
        var config = Layout(layout);
        var batches = Reference.Batches(spec, 3, config.GlobalBatch);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        var runs = Train(spec, config, new LossScaleSettings(), initial, batches);
        foreach (var (r, rank) in runs.Select((r, i) => (r, i)))
        {
            Assert.All(r.Norms, n => Assert.Null(n));
            Assert.Equal([Math.Pow(2, 32), Math.Pow(2, 31), Math.Pow(2, 30)], r.Scales);
            Assert.Equal(0, r.AdamSteps);
            foreach (var (name, w) in r.Final)
            {
                using var fp16 = tensor(Reference.ShardOf(name, initial[name], spec, rank % config.TensorParallel, config.TensorParallel)).to(ScalarType.Float16).to(ScalarType.Float32);
                Assert.True(w.AsSpan().SequenceEqual(fp16.data<float>().ToArray()), $"{layout} rank {rank}: {name} changed on a skipped step");
            }
            Assert.All(r.Losses, l => Assert.True(float.IsFinite(l) && l > 0, $"{layout} rank {rank}: loss {l}"));
        }
    }

    /// <summary>
    /// The overflow flag is max-reduced over Megatron's grad-stats group: the tensor x pipeline ranks of the replicated
    /// optimizer (its data-parallel replicas hold the same averaged gradients), every rank under the distributed optimizer
    /// (each data-parallel rank steps its own shard). Here only the last of 2 (tp) x 2 (dp) ranks overflowed.
    /// </summary>
    [Fact]
    public void AnOverflowOnOneRankIsEveryRanksInItsGradStatsGroup()
    {
        bool[][] Found(bool distributedOptimizer) => InProcessJob.Run(4, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(4, 2, 1, 1));
            var sumOver = distributedOptimizer ? new[] { groups.ModelParallel, groups.DataWithContext } : new[] { groups.ModelParallel };
            using var flag = tensor(new[] { world.Rank == 3 ? 1f : 0f });
            return new[] { new Harness.Executor.DataParallel.GradientNorm([], sumOver).FoundInf(flag) };
        });
        Assert.Equal([false, false, true, true], Found(distributedOptimizer: false).Select(f => f[0]));
        Assert.Equal([true, true, true, true], Found(distributedOptimizer: true).Select(f => f[0]));
    }

    /// <summary>
    /// With a scale the gradients do not overflow at (2^12), the fp16 run's gradient norm is the fp32 run's from the same
    /// weights: unscaled once, before the norm and the clipping. Missing or doubled unscaling would be off by 4096. The
    /// runs differ by fp16's rounding of the activations and gradients (unit roundoff 2^-11 = 4.9e-4 per operation;
    /// measured 5.7e-5 on the norms and 2.1e-5 on the losses, as the roundings average out), so 1e-3 bounds both.
    /// </summary>
    [Fact]
    public void TheGradientsAreUnscaledBeforeTheNormAndClipping()
    {
        var spec = Reference.Llama();
        var batches = Reference.Batches(spec, 3, 4);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        var scaling = new LossScaleSettings(Initial: 4096);
        var fp16 = Train(spec, Config(), scaling, initial, batches).Single();
        var fp32 = Train(spec, Config(Precision.Fp32), scaling, initial, batches).Single();
        Assert.All(fp16.Norms, n => Assert.NotNull(n));
        Assert.Equal([4096.0, 4096, 4096], fp16.Scales);
        Assert.Equal(3, fp16.AdamSteps);
        Reference.AssertClose(fp16.Norms.Select(n => n!.Value).ToArray(), fp32.Norms.Select(n => n!.Value).ToArray(), "fp16 vs fp32 gradient norms", 1e-3);
        Reference.AssertClose(fp16.Losses, fp32.Losses, "fp16 vs fp32 losses", 1e-3);
    }

    /// <summary>
    /// Parallel fp16 layouts against the one-rank fp16 run from the same weights, with a scale that does not overflow.
    /// Data parallelism computes the same fp16 micro-batches (each loss divided by a power of two the other way) and sums
    /// them in another order in float32; tensor parallelism splits the GEMMs and sums the row-parallel halves in fp16;
    /// pipeline parallelism passes fp16 activations and gradients between stages; context parallelism's ring attention
    /// combines its blocks in float32. All leave errors far below fp16's unit roundoff 2^-11 = 4.9e-4 on the losses and
    /// norms (measured at most 1.7e-6 and 7.4e-5): 1e-4 and 1e-3 bound them. The final fp16 weights are the float32
    /// master weights rounded, and master weights that differ by Adam's noise can round to neighbouring fp16 values, one
    /// ulp (up to 2^-10 relative) apart (measured 3.9e-4 under TP2, 3.6e-4 under CP2, 9.9e-5 under DP2): 2e-3 bounds them.
    /// </summary>
    [Theory]
    [InlineData("dp2")]
    [InlineData("tp2")]
    [InlineData("dp2-distributed-optimizer")]
    [InlineData("dp2-zero2")]
    [InlineData("dp2-zero3")]
    [InlineData("pp2")]
    [InlineData("cp2")]
    public void ParallelFp16MatchesTheOneRankFp16Run(string layout)
    {
        var spec = Model(layout);
        var config = Layout(layout);
        var batches = Reference.Batches(spec, 3, config.GlobalBatch);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        var scaling = new LossScaleSettings(Initial: 4096);
        var serial = Train(spec, Config() with { GlobalBatch = config.GlobalBatch }, scaling, initial, batches).Single();
        Assert.All(serial.Norms, n => Assert.NotNull(n));
        var runs = Train(spec, config, scaling, initial, batches);
        foreach (var (r, rank) in runs.Select((r, i) => (r, i)))
        {
            Assert.Equal(serial.Scales, r.Scales);
            Assert.Equal(serial.AdamSteps, r.AdamSteps);
            Reference.AssertClose(r.Losses, serial.Losses, $"{layout} rank {rank} losses", 1e-4);
            Reference.AssertClose(r.Norms.Select(n => n!.Value).ToArray(), serial.Norms.Select(n => n!.Value).ToArray(), $"{layout} rank {rank} norms", 1e-3);
            var names = r.Final.Keys.Order().ToList();
            var expected = Reference.Concatenated(names.Select(n => Reference.ShardOf(n, serial.Final[n], spec, rank % config.TensorParallel, config.TensorParallel)));
            Reference.AssertClose(Reference.Concatenated(names.Select(n => r.Final[n])), expected, $"{layout} rank {rank} final weights", 2e-3);
        }
    }
}
