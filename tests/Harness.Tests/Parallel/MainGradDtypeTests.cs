using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.Training;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Tests.Parallel;

/// <summary>
/// Megatron's 16-bit main gradients (--fp16 without --accumulate-allreduce-grads-in-fp32, --grad-reduce-in-bf16,
/// --main-grads-dtype bf16): the grad buffer is in the parameters' dtype, so every micro-batch's fold and every
/// data-parallel collective rounds to it; the optimizer reads a float32 copy, which the loss scaler unscales and checks.
/// fp16 and bf16 both run on CPU ranks (libtorch's CPU kernels run every operator of the model in Half and BFloat16).
/// </summary>
public class MainGradDtypeTests
{
    private static RunDescription Config(Precision precision, int dp = 1, int tp = 1, int pp = 1, int zero = 0, int microBatches = 4) =>
        new(DataParallel: dp, TensorParallel: tp, PipelineParallel: pp, MicroBatch: 1, GlobalBatch: microBatches * dp, ZeroStage: zero, Precision: precision,
            GradientsInFp32: false, GradientAccumulationFusion: false);

    private static ScalarType Dtype(Precision p) => ExecutorSupport.ComputeDtype(p);

    /// <summary>A layer's worth of parameters in <paramref name="dtype"/>, for the buffer alone.</summary>
    private sealed class Two : nn.Module
    {
        public readonly TorchSharp.Modules.Parameter Weight, Bias;

        public Two(ScalarType dtype) : base(nameof(Two))
        {
            Weight = new TorchSharp.Modules.Parameter(zeros(2, 2, dtype: dtype));
            Bias = new TorchSharp.Modules.Parameter(zeros(2, dtype: dtype));
            RegisterComponents();
        }
    }

    /// <summary>
    /// By hand: 1 then three times 2^-11, folded into fp16 main gradients. fp16 has 10 fraction bits, so 1 + 2^-11 is a tie
    /// that rounds to the even 1: the fp16 main gradient stays 1 after each fold, where float32 main gradients (the flag on)
    /// hold 1 + 3·2^-11 exactly. In bf16 (7 fraction bits) the same with 2^-8: 1 + 2^-8 rounds to 1, and 1 + 3·2^-8 is what
    /// float32 keeps. The other element, 3 · 2^-12 then 2^-12 twice, is exact in both (5·2^-12 needs 3 bits).
    /// </summary>
    [Theory]
    [InlineData(Precision.Fp16, 11)]
    [InlineData(Precision.Bf16, 8)]
    public void SixteenBitMainGradientsRoundAtEveryFold(Precision precision, int halfUlpExponent)
    {
        TorchRuntime.Initialize();
        var dtype = Dtype(precision);
        double tie = Math.Pow(2, -halfUlpExponent), small = Math.Pow(2, -12);
        float[] Folded(bool fp32)
        {
            using var module = new Two(dtype);
            using var buffer = new ParamAndGradBuffer(module, dtype, mainGradsInFp32: fp32);
            Assert.Equal(fp32 ? ScalarType.Float32 : dtype, buffer.MainGrads.dtype);
            double[][] microBatches = [[1, 3 * small], [tie, small], [tie, small], [tie, 0]];
            using (no_grad())
                foreach (var g in microBatches)
                {
                    module.Weight.grad!.view(-1).narrow(0, 0, 2).copy_(tensor(g).to(dtype));
                    buffer.AccumulateMicroBatch();
                }
            using var main = buffer.MainGrads.narrow(0, 0, 2).to(ScalarType.Float64);
            return main.data<double>().Select(x => (float)x).ToArray();
        }
        Assert.Equal([1f, (float)(5 * small)], Folded(fp32: false));
        Assert.Equal([(float)(1 + 3 * tie), (float)(5 * small)], Folded(fp32: true));
    }

    /// <summary>
    /// The main gradients (as float32) every rank's trainer accumulated in one step, as backward left them (scaled by the loss
    /// scale under fp16). No clipping: the optimizer's float32 gradients are the float32 main gradients themselves, which
    /// Megatron unscales and clips in place; their scale is multiplied back (a power of two: exact).
    /// </summary>
    private static float[][] MainGradsAfterOneStep(ModelSpec spec, RunDescription config, Tensor batch, Dictionary<string, float[]> initial) =>
        InProcessJob.Run(config.WorldSize, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(world.Size, config.TensorParallel, config.ContextParallel, config.PipelineParallel));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam with { ClipGrad = 0 }, new LossScaleSettings(Initial: 4096));
            trainer.LoadWeights((name, p) => tensor(Reference.ShardOf(name, initial[name], spec, groups.TensorRank, config.TensorParallel)).view(p.shape));
            using var scope = NewDisposeScope();
            trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
            Assert.Equal(config.GradientsInFp32 ? ScalarType.Float32 : Dtype(config.Precision), trainer.Buffer.MainGrads.dtype);
            var main = trainer.Buffer.MainGrads.to(ScalarType.Float32);
            if (config.GradientsInFp32 && trainer.GradScaler is { } scaler) main = main.Times(scaler.Scale);
            return main.data<float>().ToArray();
        }).ToArray();

    /// <summary>
    /// Through the trainer, micro-batches A, A, A, B: every micro-batch's 16-bit gradient is that of a run of four copies of
    /// its row (the same weights, tokens, operators and divisor 4; gradient-accumulation fusion off, so each is autograd's
    /// 16-bit .grad), whose float32 main gradients hold 4g exactly (g has 11 significant bits at most), so g is theirs / 4.
    /// 16-bit main gradients must hold the rounding sequence r(r(r(gA + gA) + gA) + gB) = r(r(3gA) + gB), r the rounding to
    /// the compute type; accumulating in float32 and rounding once, r(3gA + gB), differs wherever 3gA is not representable
    /// (asserted for some elements).
    /// </summary>
    [Theory]
    [InlineData(Precision.Fp16)]
    [InlineData(Precision.Bf16)]
    public void TheTrainersMainGradientsAccumulateMicroBatchesInTheComputeType(Precision precision)
    {
        var spec = Reference.Gpt();
        var config = Config(precision);
        var rows = Reference.Batches(spec, 1, 2)[0];
        Tensor Repeated(params int[] which) => cat(which.Select(i => rows.narrow(0, i, 1)).ToArray());
        var initial = Reference.Serial(spec, [Repeated(0, 0, 0, 1)]).Initial;
        Tensor G(int row) => tensor(MainGradsAfterOneStep(spec, config with { GradientsInFp32 = true }, Repeated(row, row, row, row), initial).Single()).Over(4);
        using var gA = G(0);
        using var gB = G(1);
        var sixteen = MainGradsAfterOneStep(spec, config, Repeated(0, 0, 0, 1), initial).Single();
        var dtype = Dtype(precision);
        using var r3 = gA.Times(3).to(dtype);
        using var expected = r3.Plus(gB.to(dtype)).to(ScalarType.Float32);
        Assert.Equal(expected.data<float>().ToArray(), sixteen);
        using var onceRounded = gA.Times(3).Plus(gB).to(dtype).to(ScalarType.Float32);
        Assert.NotEqual(onceRounded.data<float>().ToArray(), sixteen);
    }

    /// <summary>
    /// The data-parallel all-reduce runs in the compute type: each of 4 ranks accumulates its own micro-batches (the main
    /// gradients of a one-rank run over that rank's rows, bit for bit), and the reduced bucket is the in-process
    /// communicator's rank-order sum rounded at every addition, r(r(r(A + B) + C) + D) / 4 (a power of two: exact). A float32
    /// reduction rounded once differs (asserted).
    /// </summary>
    [Fact]
    public void TheDataParallelReductionRoundsToBf16AtEveryAddition()
    {
        var spec = Reference.Gpt();
        var config = Config(Precision.Bf16, dp: 4, microBatches: 2);
        var batch = Reference.Batches(spec, 1, config.GlobalBatch)[0];
        var initial = Reference.Serial(spec, [batch]).Initial;
        var reduced = MainGradsAfterOneStep(spec, config, batch, initial);
        var local = Enumerable.Range(0, 4).Select(r =>
        {
            // Rank r's rows of the global batch, in the order its micro-batches take them.
            var rows = cat(Enumerable.Range(0, 2).Select(i => batch.narrow(0, i * 4 + r, 1)).ToArray());
            return tensor(MainGradsAfterOneStep(spec, Config(Precision.Bf16, microBatches: 2), rows, initial).Single()).to(ScalarType.BFloat16);
        }).ToList();
        var sum = local[0].clone();
        foreach (var l in local.Skip(1)) sum.add_(l, One);
        var expected = sum.Over(4).to(ScalarType.Float32).data<float>().ToArray();
        Assert.All(reduced, r => Assert.Equal(expected, r));
        var exact = local.Select(l => l.to(ScalarType.Float32)).Aggregate((a, b) => a.Plus(b)).Over(4).to(ScalarType.BFloat16).to(ScalarType.Float32);
        Assert.NotEqual(exact.data<float>().ToArray(), reduced[0]);
    }

    public static TheoryData<string> Layouts() => new("dp2", "dp2-distributed-optimizer", "dp2-zero2", "dp2-zero3", "tp2", "pp2");

    private static RunDescription Layout(string name, Precision precision) => name switch
    {
        "dp2" => Config(precision, dp: 2),
        "dp2-distributed-optimizer" => Config(precision, dp: 2, zero: 1) with { Overlap = new OverlapSpec(GradientReduce: true, ParamGather: true) },
        "dp2-zero2" => Config(precision, dp: 2, zero: 2) with { Overlap = new OverlapSpec(GradientReduce: true) },
        "dp2-zero3" => Config(precision, dp: 2, zero: 3),
        "tp2" => Config(precision, tp: 2),
        "pp2" => Config(precision, pp: 2),
        _ => Config(precision),
    };

    /// <summary>What a layout's rank saw over three steps: losses, norms (null: skipped), final weights by serial name.</summary>
    private sealed record RankRun(float[] Losses, float?[] Norms, Dictionary<string, float[]> Final);

    private static RankRun[] Train(ModelSpec spec, RunDescription config, LossScaleSettings scaling, Dictionary<string, float[]> initial, Tensor[] batches) =>
        InProcessJob.Run(config.WorldSize, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(world.Size, config.TensorParallel, config.ContextParallel, config.PipelineParallel));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam, scaling);
            trainer.LoadWeights((name, p) => tensor(Reference.ShardOf(name, initial[name], spec, groups.TensorRank, config.TensorParallel)).view(p.shape));
            var (losses, norms) = (new List<float>(), new List<float?>());
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                var (loss, norm) = trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength), losses.Count);
                losses.Add(loss);
                norms.Add(norm);
            }
            trainer.FinishParamSync();
            return new RankRun([.. losses], [.. norms], trainer.NamedParameters().ToDictionary(n => n.SerialName, n => n.Parameter.to(ScalarType.Float32).data<float>().ToArray()));
        });

    /// <summary>
    /// Parallel layouts with 16-bit main gradients against the one-rank run with them, from the same weights, three steps.
    /// They differ by where the 16-bit roundings fall: data parallelism accumulates half the micro-batches per rank and
    /// sums the halves in the collective, the distributed optimizer and ZeRO reduce-scatter them, tensor parallelism sums
    /// its row-parallel halves in 16 bits, the pipeline passes 16-bit activations. Each main gradient is then off by a few
    /// roundings of its sum, a relative 2^-8 = 3.9e-3 (bf16's unit roundoff) or 2^-11 = 4.9e-4 (fp16's) each, which
    /// average out over the elements of the norm: 1e-2 (bf16) and 2e-3 (fp16) bound the norms; the losses move by lr times
    /// that and are bounded by 1e-3. Final 16-bit weights that differ by Adam's noise round to neighbouring values, one ulp
    /// apart (2^-7 relative in bf16, 2^-10 in fp16): 2e-2 and 3e-3 bound them.
    /// </summary>
    [Theory]
    [MemberData(nameof(Layouts))]
    public void ParallelLayoutsWithBf16MainGradientsMatchTheOneRankRun(string layout) => AssertParallelMatchesSerial(layout, Precision.Bf16, 1e-2, 2e-2);

    /// <summary>As <see cref="ParallelLayoutsWithBf16MainGradientsMatchTheOneRankRun"/> with fp16 main gradients (Megatron's
    /// default under --fp16) and a loss scale that does not overflow.</summary>
    [Theory]
    [MemberData(nameof(Layouts))]
    public void ParallelLayoutsWithFp16MainGradientsMatchTheOneRankRun(string layout) => AssertParallelMatchesSerial(layout, Precision.Fp16, 2e-3, 3e-3);

    private static void AssertParallelMatchesSerial(string layout, Precision precision, double normTolerance, double weightTolerance)
    {
        var spec = Reference.Gpt();
        var config = Layout(layout, precision);
        var batches = Reference.Batches(spec, 3, config.GlobalBatch);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        var scaling = new LossScaleSettings(Initial: 4096);
        var serial = Train(spec, Config(precision) with { GlobalBatch = config.GlobalBatch }, scaling, initial, batches).Single();
        Assert.All(serial.Norms, n => Assert.NotNull(n));
        foreach (var (r, rank) in Train(spec, config, scaling, initial, batches).Select((r, i) => (r, i)))
        {
            Reference.AssertClose(r.Losses, serial.Losses, $"{layout} rank {rank} losses", 1e-3);
            Reference.AssertClose(r.Norms.Select(n => n!.Value).ToArray(), serial.Norms.Select(n => n!.Value).ToArray(), $"{layout} rank {rank} norms", normTolerance);
            var names = r.Final.Keys.Order().ToList();
            var expected = Reference.Concatenated(names.Select(n => Reference.ShardOf(n, serial.Final[n], spec, rank % config.TensorParallel, config.TensorParallel)));
            Reference.AssertClose(Reference.Concatenated(names.Select(n => r.Final[n])), expected, $"{layout} rank {rank} final weights", weightTolerance);
        }
    }

    /// <summary>
    /// The loss scaler's overflow check runs on the fp16 main gradients (through their float32 copy): Megatron's default
    /// initial scale 2^32 overflows fp16 at once (Fp16Tests), so with fp16 main gradients too every rank skips three steps,
    /// the scale backs off 2^32, 2^31, 2^30, and no norm is reported, under data parallelism and ZeRO 2.
    /// </summary>
    [Theory]
    [InlineData("dp2")]
    [InlineData("dp2-zero2")]
    public void AnOverflowOfFp16MainGradientsIsSkipped(string layout)
    {
        var spec = Reference.Gpt();
        var config = Layout(layout, Precision.Fp16);
        var batches = Reference.Batches(spec, 3, config.GlobalBatch);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        foreach (var r in Train(spec, config, new LossScaleSettings(), initial, batches))
        {
            Assert.All(r.Norms, n => Assert.Null(n));
            foreach (var (name, w) in r.Final)
            {
                using var fp16 = tensor(initial[name]).to(ScalarType.Float16).to(ScalarType.Float32);
                Assert.Equal(fp16.data<float>().ToArray(), w);
            }
        }
    }
}
