using Harness.Megatron;
using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using static Harness.Tests.ZeroStageTests;

namespace Harness.Tests;

/// <summary>
/// Megatron-FSDP (--use-megatron-fsdp) by hand, on ZeroStageTests' case (its model, node and ring): a Llama-style model of 4 layers (a layer 12,847,104
/// parameters, the embedding 32,768,000, the output layer with the final norm 32,769,024, the rank 116,925,440) in bf16
/// on one H800 node, d 8, t 1, p 1, 4 micro-batches; a ring all-gather or reduce-scatter of S bytes over the 8 ranks takes
/// 7/8·S/160e9 + 7·3e-6 s. Megatron-FSDP keeps its main gradients in the parameters' dtype, 2 B, and reduces them in it.
/// </summary>
public class MegatronFsdpTests
{
    private const double Layer = Layers / 4;

    private static RunDescription Config(int stage, MegatronFsdp? fsdp = null) =>
        new(DataParallel: 8, MicroBatch: 1, GlobalBatch: 32, ZeroStage: stage, Precision: Precision.Bf16,
            GradientsInFp32: false, Fsdp: fsdp ?? new MegatronFsdp());

    [Theory]
    [InlineData(0, 16.0)]                 // bf16 weights 2 + bf16 main gradients 2 + fp32 main weights, m, v 12
    [InlineData(1, 4 + 12.0 / 8)]         // optim: main weights and states sharded
    [InlineData(2, 2 + 14.0 / 8)]         // optim_grads: and the main gradients
    [InlineData(3, 16.0 / 8)]             // optim_grads_params: and the compute weights
    public void EachStrategyShardsItsPartOfSixteenBytesPerParameter(int stage, double bytes) =>
        Assert.Equal(bytes, ModelState.BytesPerParameter(Config(stage)), 12);

    [Fact]
    public void OptimGradsHoldsTwoLayersOfUnshardedGradients()
    {
        // One layer filling in backward, one being reduce-scattered: 2 · 12,847,104 · 2 B, and on the last stage (here the
        // only one) the output layer's, the backward's first, 32,769,024 · 2 B; no weights gathered.
        var set = ModelState.ZeroWorkingSet(Model, Config(2), 0);
        Assert.Equal(new ModelStateBytes(0, (2 * Layer + Output) * 2, 0), set);
        var twoStages = Config(2) with { DataParallel = 4, PipelineParallel = 2 };
        Assert.Equal(2 * Layer * 2, ModelState.ZeroWorkingSet(Model, twoStages, 0).Gradients);
    }

    [Fact]
    public void OptimGradsParamsHoldsThePrefetchWindowAndTheEndsWhole()
    {
        // The prefetch window is half of max(1e9, 2 · a layer) = 5e8 elements: ceil(5e8 / 12,847,104) = 39 layers ahead,
        // so all 4 of the chunk are gathered; the embedding and output layer stay whole, 7/8 of them beyond their shard.
        double ends = (Embedding + Output) * 2 * 7 / 8;
        Assert.Equal(40, new MegatronFsdp().GatheredLayers(Layer, 100, null)); // in a chunk of 100 layers: 1 + 39
        Assert.Equal(new ModelStateBytes(4 * Layer * 2 + ends, (2 * Layer + Output) * 2, 0), ModelState.ZeroWorkingSet(Model, Config(3), 0));
        // The double buffer: two layers. A unit of 2 layers' elements prefetches one layer ahead, also two in all.
        Assert.Equal(2 * Layer * 2 + ends, ModelState.ZeroWorkingSet(Model, Config(3, new MegatronFsdp(DoubleBuffer: true)), 0).Weights, 3);
        Assert.Equal(2 * Layer * 2 + ends,
            ModelState.ZeroWorkingSet(Model, Config(3, new MegatronFsdp(CommunicationUnitSize: 2 * (long)Layer)), 0).Weights, 3);
        var memory = Estimator.Estimate(Model, Node, Config(3)).Memory;
        Assert.Equal(2 * Rank + 4 * Layer * 2 + ends + (2 * Layer + Output) * 2, memory.Weights + memory.Gradients + memory.Optimizer, 0);
    }

    [Fact]
    public void TheWrapperForcesTheOverlaps()
    {
        Assert.Equal((false, false), (Config(1).OverlapOrDefault.GradientReduce, Config(1).OverlapOrDefault.ParamGather));
        Assert.Equal((true, false), (Config(2).OverlapOrDefault.GradientReduce, Config(2).OverlapOrDefault.ParamGather));
        Assert.Equal((true, true), (Config(3).OverlapOrDefault.GradientReduce, Config(3).OverlapOrDefault.ParamGather));
        Assert.False(Config(3) with { Fsdp = null } is { OverlapOrDefault.GradientReduce: true });
    }

    [Fact]
    public void OptimGradsParamsGathersEachLayerTwiceAMicroBatchAndTheEndsOnceAStep()
    {
        // Per micro-batch: each layer's bf16 weights gathered before its forward and its backward, one layer ahead (the
        // first layer's G/4 sticks out of each pass), its bf16 gradients reduce-scattered after its backward (the last
        // layer's R/4 sticks out); the rest slows the compute by NCCL's 20% of the SMs. The embedding's and output
        // layer's gradients are reduce-scattered whole; their weights are gathered once, after the step, behind the next
        // forward but the first of their 2 buckets (Megatron's bucket of 40M elements).
        double g = Ring(2 * Layers), r = Ring(2 * Layers);
        double forward = g / 4 + 0.2 * (g - g / 4);
        double backward = g / 4 + r / 4 + 0.2 * (g + r - g / 4 - r / 4);
        double ends = Ring(2 * Embedding) + Ring(2 * Output);
        var e = Estimator.Estimate(Model, Node, Config(3));
        Assert.Equal(4 * (forward + backward + ends) + Ring(2 * (Embedding + Output)) / 2, e.Time.DataParallelComm, 12);
        Assert.Equal(4, ZeroMicroBatchComm.Buckets(Layers, 4, Config(3)));
        Assert.Equal(0, ZeroMicroBatchComm.EndCollectives(Embedding, Config(3), Node).Gather);
        // Version 2 gathers its root module (the ends) with every pass, as DeepSpeed's stage 3 does.
        var v2 = Config(3, new MegatronFsdp(Version: 2));
        Assert.Equal(Ring(2 * Embedding), ZeroMicroBatchComm.EndCollectives(Embedding, v2, Node).Gather, 12);
    }

    [Fact]
    public void OptimGradsReduceScattersBf16GradientsEveryMicroBatch()
    {
        // 1e9 parameters' bf16 gradients, 2e9 B, per micro-batch: half of DeepSpeed's fp32 bytes.
        Assert.Equal(2e9, ZeroMicroBatchComm.ReduceScatterBytes(1e9, Config(2)));
        Assert.Equal(Ring(2e9), ZeroMicroBatchComm.Collectives(1e9, Config(2), Node).ReduceScatter, 12);
        Assert.Equal(0, DataParallelComm.GradientReduce(1e9, Config(2), Node));
        // optim reduce-scatters once a step, in bf16 too.
        Assert.Equal(Ring(2e9), DataParallelComm.GradientReduce(1e9, Config(1), Node), 12);
    }

    [Theory]
    [InlineData(2, 1, null)]
    [InlineData(3, 1, null)]
    [InlineData(3, 2, "--megatron-fsdp-version 2 refuses tensor, pipeline and context parallelism (t 1, p 2, c 1); use version 1 or sizes of 1.")]
    public void VersionOneRunsWithPipelineParallelismAndVersionTwoDoesNot(int stage, int version, string? error)
    {
        var model = Model with { NumLayers = 8 };
        var c = Config(stage, new MegatronFsdp(Version: version)) with { DataParallel = 4, PipelineParallel = 2, GradientAccumulationFusion = version == 1 };
        Assert.Equal(error, c.Validate(model, 8).FirstOrDefault());
        // DeepSpeed's stages refuse it.
        Assert.StartsWith($"ZeRO stage {stage} cannot run with --pipeline-model-parallel-size 2", (c with { Fsdp = null }).Validate(model, 8).First());
    }

    [Theory]
    [InlineData("--use-megatron-fsdp --bf16", 3, false, null)]
    [InlineData("--use-megatron-fsdp --data-parallel-sharding-strategy optim_grads --bf16", 2, false, null)]
    [InlineData("--use-megatron-fsdp --data-parallel-sharding-strategy no_shard --bf16 --megatron-fsdp-main-grads-dtype fp32", 0, true, null)]
    [InlineData("--use-megatron-fsdp --bf16 --fsdp-double-buffer --suggested-communication-unit-size 200000000", 3, false, null)]
    [InlineData("--use-megatron-fsdp --zero-stage 2", 3, true, "--zero-stage 2 is DeepSpeed's sharding; under --use-megatron-fsdp pass --data-parallel-sharding-strategy (no_shard, optim, optim_grads, optim_grads_params).")]
    [InlineData("--data-parallel-sharding-strategy optim", 0, true, "--data-parallel-sharding-strategy applies only with --use-megatron-fsdp.")]
    [InlineData("--use-megatron-fsdp --bf16 --grad-reduce-in-bf16", 3, false, "--grad-reduce-in-bf16 is the distributed optimizer's; Megatron-FSDP does not read it: pass --megatron-fsdp-main-grads-dtype (auto, fp32 or bf16).")]
    [InlineData("--use-megatron-fsdp --megatron-fsdp-version 2 --use-distributed-optimizer", 3, true, "--megatron-fsdp-version 2 is not compatible with --use-distributed-optimizer (Megatron asserts the same).")]
    public void TheCodecReadsMegatronFsdpAndWritesItBack(string flags, int stage, bool fp32Grads, string? error)
    {
        var cl = CommandLine.Parse(flags.Split(' '), RunDescriptionFlags.Flags);
        var d = RunDescriptionFlags.Read(cl, 8);
        Assert.Equal(error, cl.Errors.FirstOrDefault());
        if (error is not null) return;
        Assert.Equal((stage, fp32Grads), (d.ZeroStage, d.GradientsInFp32));
        Assert.NotNull(d.Fsdp);
        var back = CommandLine.Parse(RunDescriptionFlags.Format(d).ToArray(), RunDescriptionFlags.Flags);
        Assert.Equal(d, RunDescriptionFlags.Read(back, 8));
        Assert.Empty(back.Errors);
    }
}
