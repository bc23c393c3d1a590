using Harness.Executor.DataParallel;
using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.Training;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// Megatron's --use-precision-aware-optimizer (Transformer Engine's FusedAdam states, <see cref="PrecisionAwareStates"/>)
/// under the distributed optimizer and ZeRO 2 and 3 on CPU ranks: the stored dtypes and sizes, the remainder and scaling
/// arithmetic by hand, the all-float32 case against the ordinary distributed optimizer to the bit, and lower-precision
/// states against it within their rounding.
/// </summary>
public class PrecisionAwareOptimizerTests
{
    private static float Bits(uint u) => BitConverter.UInt32BitsToSingle(u);

    /// <summary>
    /// By hand, FusedAdam's remainders: 1 + 2^-8 is 0x3F808000, high half 0x3F80 (1.0), low half 0x8000, negative as an int16,
    /// so the bf16 weight is 0x3F81 (1 + 2^-7: the tie rounds away from zero, where libtorch's round-to-nearest-even cast
    /// gives 1.0) and the remainder -32768; its negative likewise 0xBF81. 1 + 2^-9 (0x3F804000) keeps 0x3F80 and remainder
    /// 0x4000. Joining weight and remainder gives back every float32 bit.
    /// </summary>
    [Fact]
    public void RemaindersSplitFloat32MasterWeightsAsTransformerEngineDoes()
    {
        TorchRuntime.Initialize();
        float[] master = [Bits(0x3F808000), -Bits(0x3F808000), Bits(0x3F804000), Bits(0x40490FDB)];
        using var states = new PrecisionAwareStates(new AdamStates(PrecisionAware: true), ScalarType.BFloat16, [(0, master.Length)], CPU);
        Assert.Equal(ScalarType.Int16, states.Master.dtype);
        using var param = zeros(master.Length, dtype: ScalarType.BFloat16);
        states.StoreMaster(0, tensor(master), param);
        Assert.Equal([0x3F81u, 0xBF81u, 0x3F80u, 0x4049u], HighHalves(param));
        using var remainders = states.Master.to(ScalarType.Int32);
        Assert.Equal([-32768, -32768, 0x4000, 0x0FDB], remainders.data<int>().ToArray());
        using var joined = states.UnscaledMaster(0, master.Length, param);
        Assert.Equal(master, joined.data<float>().ToArray());
        using var nearestEven = tensor(master).to(ScalarType.BFloat16);
        Assert.Equal(0x3F80u, HighHalves(nearestEven)[0]);
    }

    /// <summary>The bits of bf16 values (their float32 values' high halves).</summary>
    private static uint[] HighHalves(Tensor bf16)
    {
        using var f = bf16.to(ScalarType.Float32);
        return f.data<float>().Select(x => BitConverter.SingleToUInt32Bits(x) >> 16).ToArray();
    }

    /// <summary>
    /// By hand, an fp16 moment scaled per tensor: [1e-6, 2e-6, -4e-6] has absmax 4e-6, so s = 4e-6 / 32752 and the stored
    /// values are x / s = 8188, 16376, -32752 (fp16 holds them: ulp 4, 8, 16 there), where plain fp16 would keep 1e-6 as a
    /// subnormal with 2^-24 = 6e-8 steps. A second tensor (piece) gets its own scale. Read back: stored · s.
    /// </summary>
    [Fact]
    public void Fp16MomentsAreScaledPerTensorToHalfTheFp16Range()
    {
        TorchRuntime.Initialize();
        var spec = new AdamStates(PrecisionAware: true, ExpAvg: StateDtype.Fp16);
        using var states = new PrecisionAwareStates(spec, ScalarType.BFloat16, [(0, 3), (3, 1)], CPU);
        Assert.Equal(ScalarType.Float16, states.Moments[0].dtype);
        Assert.Equal(ScalarType.Float32, states.Moments[1].dtype);
        states.StoreMoment(0, 0, tensor(new[] { 1e-6f, 2e-6f, -4e-6f, 3f }));
        using var stored = states.Moments[0].to(ScalarType.Float32);
        Assert.Equal([8188f, 16376f, -32752f, 32752f], stored.data<float>().ToArray());
        float s = 4e-6f / 32752f;
        Assert.Equal([s, 3f / 32752f], states.Scales[1]!.data<float>().ToArray());
        using var back = states.UnscaledMoment(0, 0, 4);
        Assert.Equal([8188f * s, 16376f * s, -32752f * s, 32752f * (3f / 32752f)], back.data<float>().ToArray());
    }

    /// <summary>
    /// By hand, fp8 moments (E4M3, 3 fraction bits): [1e-3, -2e-3, 4e-3] has absmax 4e-3, s = 4e-3 / 448, the quantizer's
    /// scale 1/s = 112000, so x · 112000 = 112, -224, 448 = 1.75 · 2^6, 2^7, 2^8, stored as the bytes 0x6E, 0xF6, 0x7E (sign,
    /// exponent 13, 14, 15 biased by 7, fraction 110), read back as those values times 1/112000.
    /// </summary>
    [Fact]
    public void Fp8MomentsAreE4M3BytesScaledPerTensorTo448()
    {
        TorchRuntime.Initialize();
        var spec = new AdamStates(PrecisionAware: true, ExpAvgSq: StateDtype.Fp8);
        using var states = new PrecisionAwareStates(spec, ScalarType.BFloat16, [(0, 3)], CPU);
        Assert.Equal(ScalarType.Byte, states.Moments[1].dtype);
        states.StoreMoment(1, 0, tensor(new[] { 1e-3f, -2e-3f, 4e-3f }));
        Assert.Equal([(byte)0x6E, (byte)0xF6, (byte)0x7E], states.Moments[1].data<byte>().ToArray());
        float q = 1f / (4e-3f / 448f), inverse = 1f / q;
        using var back = states.UnscaledMoment(1, 0, 3);
        Assert.Equal([112f * inverse, -224f * inverse, 448f * inverse], back.data<float>().ToArray());
    }

    private static RunDescription Config(Precision precision, AdamStates states, int zero = 1, bool fp32Grads = true) =>
        new(DataParallel: 2, MicroBatch: 1, GlobalBatch: 8, ZeroStage: zero, Precision: precision, GradientsInFp32: fp32Grads, Adam: states,
            GradientAccumulationFusion: false);

    /// <summary>What a rank held after three steps: losses, norms, final weights (float32 of them) in buffer order, the stored
    /// states' dtypes and bytes per element, and the checkpoint's float32 master weights.</summary>
    private sealed record RankRun(float[] Losses, float[] Norms, float[] Weights, ScalarType[] Dtypes, long StateBytes, long StateElements, float[] Master,
        float[] WeightBitsCheck);

    private static RankRun[] Train(ModelSpec spec, RunDescription config, Dictionary<string, float[]> initial, Tensor[] batches) =>
        InProcessJob.Run(config.WorldSize, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(world.Size, 1, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam, new LossScaleSettings(Initial: 4096));
            trainer.LoadWeights((name, p) => tensor(initial[name]).view(p.shape));
            var (losses, norms) = (new List<float>(), new List<float>());
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                var (loss, norm) = trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength), losses.Count);
                losses.Add(loss);
                norms.Add(norm!.Value);
            }
            trainer.FinishParamSync();
            var o = trainer.Optimizer;
            using var checkpoint = NewDisposeScope();
            var master = o.CheckpointTensors()[0].Tensor.data<float>().ToArray();
            var weights = trainer.NamedParameters().SelectMany(n => n.Parameter.to(ScalarType.Float32).data<float>().ToArray()).ToArray();
            // This rank's own pieces of the 16-bit weights, in state order (to compare with its master weights).
            var own = o.Segments.SelectMany(seg => Piece(trainer, seg.Offset, seg.Length)).ToArray();
            return new RankRun([.. losses], [.. norms], weights, [o.Master.dtype, .. o.States.Select(x => x.dtype)],
                o.Master.numel() * o.Master.element_size() + o.States.Sum(x => x.numel() * x.element_size()), o.Master.numel(), master, own);
        });

    /// <summary>The buffer's weights [offset, offset + length) as float32 (all weights gathered).</summary>
    private static float[] Piece(ParallelTrainer trainer, long offset, long length)
    {
        var values = new List<float>();
        foreach (var (_, p, at) in trainer.Buffer.Layout)
        {
            long lo = Math.Max(offset, at), hi = Math.Min(offset + length, at + p.numel());
            if (hi > lo) values.AddRange(p.reshape(-1).narrow(0, lo - at, hi - lo).to(ScalarType.Float32).data<float>().ToArray());
        }
        return [.. values];
    }

    /// <summary>
    /// With float32 master weights and moments and fp16 weights (no remainders: those need bf16 weights) the precision-aware
    /// optimizer does the ordinary distributed optimizer's arithmetic on the same float32 values and casts the weights alike:
    /// the same losses, norms and weights to the bit, under ZeRO 1, 2 and 3.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void AllFloat32StatesRunTheDistributedOptimizersArithmeticToTheBit(int zero)
    {
        var spec = Reference.Gpt();
        var batches = Reference.Batches(spec, 3, 8);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        var plain = Train(spec, Config(Precision.Fp16, AdamStates.Default, zero), initial, batches);
        var aware = Train(spec, Config(Precision.Fp16, new AdamStates(PrecisionAware: true), zero), initial, batches);
        for (int r = 0; r < 2; r++)
        {
            Assert.Equal(plain[r].Losses, aware[r].Losses);
            Assert.Equal(plain[r].Norms, aware[r].Norms);
            Assert.Equal(plain[r].Weights, aware[r].Weights);
            Assert.Equal(plain[r].Master, aware[r].Master);
        }
    }

    public static TheoryData<string, StateDtype, StateDtype, StateDtype, double> StateLayouts() => new()
    {
        // The NeMo recipes' setting: bf16 main gradients, float32 master weights as remainders, float32 moments: 10 B.
        { "bf16", StateDtype.Fp32, StateDtype.Fp32, StateDtype.Fp32, 10 },
        { "bf16", StateDtype.Fp32, StateDtype.Bf16, StateDtype.Bf16, 6 },
        { "bf16", StateDtype.Fp16, StateDtype.Fp16, StateDtype.Fp32, 8 },
        { "fp16", StateDtype.Fp32, StateDtype.Fp16, StateDtype.Bf16, 8 },
        { "fp16", StateDtype.Fp16, StateDtype.Fp32, StateDtype.Fp32, 10 },
        { "bf16", StateDtype.Fp32, StateDtype.Fp8, StateDtype.Fp8, 4 },
    };

    /// <summary>
    /// Each layout of states: stored in the dtypes asked for (int16 remainders for float32 master weights beside bf16 weights),
    /// their bytes per element the simulator's <see cref="AdamStates.BytesPerParameter"/>; the 16-bit weights every rank
    /// holds are its master weights rounded (bf16 with remainders: the high half plus one where the low half's top bit is
    /// set, computed here from the bits); and against the ordinary distributed optimizer from the same weights, with 16-bit
    /// main gradients where the layout is bf16's: the losses within 1e-3 and the norms within 2e-2 over three steps (lower
    /// precision moments and master weights round each state by 2^-8 (bf16), 2^-11 (fp16) or 2^-4 (fp8 E4M3) relative per
    /// step; Adam's update is lr = 1e-3 times their ratio, so an update moves by at most lr · 2^-4 = 6e-5 more or less than
    /// the float32 one: far below the losses' 1e-3; the norms also carry the bf16 main gradients' rounding, 2^-8 per sum).
    /// </summary>
    [Theory]
    [MemberData(nameof(StateLayouts))]
    public void LowerPrecisionStatesAreStoredAsAskedAndTrainAsTheFloat32Ones(string precisionName, StateDtype main, StateDtype m, StateDtype v, double bytes)
    {
        var precision = precisionName == "bf16" ? Precision.Bf16 : Precision.Fp16;
        var states = new AdamStates(PrecisionAware: true, main, m, v);
        Assert.Equal(bytes, states.BytesPerParameter(precision));
        var spec = Reference.Gpt();
        var batches = Reference.Batches(spec, 3, 8);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        bool bf16 = precision == Precision.Bf16;
        var plain = Train(spec, Config(precision, AdamStates.Default), initial, batches);
        var aware = Train(spec, Config(precision, states, fp32Grads: !bf16), initial, batches);
        for (int r = 0; r < 2; r++)
        {
            var a = aware[r];
            bool remainders = states.ParamRemainders(precision);
            Assert.Equal(remainders ? ScalarType.Int16 : PrecisionAwareStates.TypeOf(main), a.Dtypes[0]);
            Assert.Equal([PrecisionAwareStates.TypeOf(m), PrecisionAwareStates.TypeOf(v)], a.Dtypes[1..]);
            Assert.Equal(bytes * a.StateElements, a.StateBytes);
            // fp16 master weights are stored after the weights were cast from the float32 result, so only float32 ones are checked.
            if (main == StateDtype.Fp32)
                Assert.Equal(a.Master.Select(x => remainders ? TransformerEngineBf16(x) : Round(x, precision)).ToArray(), a.WeightBitsCheck);
            Reference.AssertClose(a.Losses, plain[r].Losses, $"rank {r} losses", 1e-3);
            Reference.AssertClose(a.Norms, plain[r].Norms, $"rank {r} norms", 2e-2);
        }
    }

    /// <summary>
    /// bf16 weights with float32 master weights as remainders, fp8 first and fp16 second moments, bf16 main gradients, two
    /// ranks: two steps, the shards written as a checkpoint does (float32 master weights joined from weights and remainders,
    /// unscaled moments and their scales), read into a fresh trainer, one more step: the loss, norm, weights and every stored
    /// state (remainders included) are those of three uninterrupted steps, bit for bit.
    /// </summary>
    [Fact]
    public void Bf16RemaindersAndScaledMomentsResumeBitForBit()
    {
        var spec = Reference.Gpt();
        var config = Config(Precision.Bf16, new AdamStates(PrecisionAware: true, ExpAvg: StateDtype.Fp8, ExpAvgSq: StateDtype.Fp16), fp32Grads: false);
        var batches = Reference.Batches(spec, 3, 8);
        var initial = Reference.Serial(spec, batches.Take(1).ToArray()).Initial;
        string root = Path.Combine(TestTemp.Root, $"harness-aware-{Guid.NewGuid():N}");
        try
        {
            InProcessJob.Run(2, world =>
            {
                using var groups = ProcessGroups.Create(world, RankOrder.For(2, 1, 1, 1));
                ParallelTrainer New()
                {
                    var t = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam);
                    t.LoadWeights((name, p) => tensor(initial[name]).view(p.shape));
                    return t;
                }
                (float Loss, float? Norm) Step(ParallelTrainer t, int i)
                {
                    using var scope = NewDisposeScope();
                    return t.Step(Reference.Lr, ParallelRun.MicroBatches(batches[i], config, groups.DataRank, spec.SeqLength), i);
                }
                float[] Everything(ParallelTrainer t)
                {
                    t.FinishParamSync();
                    var o = t.Optimizer;
                    return [.. t.NamedParameters().SelectMany(n => n.Parameter.to(ScalarType.Float32).data<float>().ToArray()),
                        .. new[] { o.Master }.Concat(o.States).SelectMany(x => x.to(ScalarType.Float32).data<float>().ToArray())];
                }
                using var straight = New();
                for (int i = 0; i < 2; i++) Step(straight, i);
                var expected = Step(straight, 2);
                string rankDir = Path.Combine(root, straight.CheckpointLayout.RankFolder(0, 0));
                Checkpoint.WriteOptimizer(rankDir, straight.CheckpointLayout, groups.DataRank, straight.Optimizer);
                groups.World.Barrier();
                using var interrupted = New();
                for (int i = 0; i < 2; i++) Step(interrupted, i);
                Checkpoint.WriteOptimizer(rankDir, interrupted.CheckpointLayout, groups.DataRank, interrupted.Optimizer);
                groups.World.Barrier();
                using var resumed = New();
                var meta = new CheckpointMeta(2, 2, 0, Reference.Seed, spec.Name, 0, "Float32", resumed.CheckpointLayout, null, AdamW.StateNames);
                Checkpoint.ReadOptimizer(rankDir, meta, resumed.Optimizer);
                resumed.Optimizer.CopyMasterToParams();
                Assert.Equal(expected, Step(resumed, 2));
                Assert.Equal(Everything(straight), Everything(resumed));
                return 0;
            });
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    /// <summary>AdamFunctorMasterParamRemainder's bf16 weight of float32 <paramref name="x"/>: the high 16 bits, plus one where
    /// the low 16 bits, as an int16, are negative.</summary>
    private static float TransformerEngineBf16(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        uint high = (bits >> 16) + ((bits & 0x8000) != 0 ? 1u : 0u);
        return Bits(high << 16);
    }

    private static float Round(float x, Precision p)
    {
        using var t = tensor(new[] { x }).to(p == Precision.Bf16 ? ScalarType.BFloat16 : ScalarType.Float16).to(ScalarType.Float32);
        return t.data<float>()[0];
    }

    /// <summary>Megatron refuses the precision-aware optimizer without the distributed optimizer; with it every state dtype runs.</summary>
    [Fact]
    public void WithoutTheDistributedOptimizerItIsInvalid()
    {
        var d = new RunDescription(Precision: Precision.Bf16, Adam: new AdamStates(PrecisionAware: true));
        Assert.Contains("--use-precision-aware-optimizer needs --use-distributed-optimizer (or a --zero-stage): Megatron raises the same (get_megatron_optimizer).",
            d.Validate(Reference.Gpt(), 1));
        Assert.Empty((d with { ZeroStage = 1 }).Validate(Reference.Gpt(), 1));
        Assert.Empty(ExecutorSupport.Refusals(d with { ZeroStage = 1 }));
        Assert.Empty(ExecutorSupport.Refusals(d with { ZeroStage = 1, Adam = new AdamStates(PrecisionAware: true, ExpAvg: StateDtype.Fp8, ExpAvgSq: StateDtype.Fp8) }));
    }
}
