using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>
/// ZeRO stages 0-3: the bytes each rank holds and what each stage communicates per step, by hand from the 18 B/param rule
/// and the ring formulas. The case: a Llama-style model of 4 layers (h 1024, SwiGLU ffn 2816, no GQA, V 32000, s 8192,
/// untied) on one H800 node, d 8, t 1, p 1, 4 micro-batches. Parameters: a layer 1024·3072 + 1024² (attention)
/// + 3·1024·2816 (MLP) + 2·1024 (norms) = 12,847,104, the four 51,388,416; the embedding 32,768,000; the output layer
/// 32,768,000 + 1024 (final norm) = 32,769,024; the rank 116,925,440. NVLink: 200 GB/s at NCCL's 80% = 160 GB/s, 3 us a
/// step, so a ring all-gather or reduce-scatter of S bytes over 8 ranks takes 7/8·S/160e9 + 7·3e-6 s.
/// </summary>
public class ZeroStageTests
{
    internal static readonly ModelSpec Model = new("zero-test", 4, 1024, 8, 8, 2816, 32000, 8192,
        Activation.SwiGlu, Normalization.RmsNorm, PositionEmbedding.Rotary, TiedEmbeddings: false, HiddenDropout: 0, AttentionDropout: 0);
    internal static readonly ClusterSpec Node = ClusterSpec.Of(GpuPresets.All["h800"], 8);
    internal const double Layers = 4 * 12_847_104.0, Embedding = 32_768_000.0, Output = 32_769_024.0;
    internal const double Rank = Layers + Embedding + Output;

    private static RunDescription Config(int zero, bool overlap = false, long? bucket = null) =>
        new(DataParallel: 8, MicroBatch: 1, GlobalBatch: 32, ZeroStage: zero, Overlap: new OverlapSpec(GradientReduce: overlap),
            DdpBucketSize: bucket, Precision: Precision.Bf16);

    /// <summary>A ring all-gather or reduce-scatter of <paramref name="bytes"/> over the node's 8 ranks.</summary>
    internal static double Ring(double bytes) => 7.0 / 8 * bytes / 160e9 + 7 * 3e-6;

    [Fact]
    public void TheCaseHasTheParametersDerivedByHand()
    {
        Assert.Equal(12_847_104, Model.ParametersPerLayer);
        Assert.Equal(Rank, ModelState.RankParameters(Model, Config(0), 0));
    }

    [Theory]
    [InlineData(0, 18.0)]          // bf16 weights 2 + fp32 gradients 4 + fp32 master weights, m, v 12
    [InlineData(1, 6 + 12.0 / 8)]  // optimizer states sharded
    [InlineData(2, 2 + 16.0 / 8)]  // and the gradients
    [InlineData(3, 18.0 / 8)]      // and the weights
    public void EachStageShardsItsPartOfTheEighteenBytesPerParameter(int zero, double bytes) =>
        Assert.Equal(bytes, ModelState.BytesPerParameter(Config(zero)), 12);

    [Theory]
    [InlineData(0, false, 18 * Rank)]
    [InlineData(1, false, 7.5 * Rank)]
    // ZeRO 2: DeepSpeed's reduce bucket of 5e8 bf16 elements, a second one under overlap_comm.
    [InlineData(2, false, 4 * Rank + 1e9)]
    [InlineData(2, true, 4 * Rank + 2e9)]
    // ZeRO 3: one bucket, and two layers' and the output layer's gathered bf16 weights: (2·12,847,104 + 32,769,024)·2 B.
    [InlineData(3, false, 2.25 * Rank + 116_926_464 + 1e9)]
    [InlineData(3, true, 2.25 * Rank + 116_926_464 + 1e9)]
    public void MemoryPerRankIsTheShardsPlusTheWorkingSet(int zero, bool overlap, double bytes)
    {
        var c = Config(zero, overlap);
        Assert.Equal(bytes, ModelState.RankBytes(Model, c, 0).Total, 0);
        var memory = Estimator.Estimate(Model, Node, c).Memory;
        Assert.Equal(bytes, memory.Weights + memory.Gradients + memory.Optimizer, 0);
    }

    [Fact]
    public void TheBucketSizeFollowsDdpBucketSize() =>
        Assert.Equal(2e7, ModelState.ZeroWorkingSet(Model, Config(2, bucket: 10_000_000), 0).Gradients);

    [Fact]
    public void EachMicroBatchMovesTheStagesMessages()
    {
        // A billion parameters: fp32 gradients 4e9 B reduce-scattered per micro-batch from stage 2 on, bf16 weights 2e9 B
        // gathered per pass in stage 3; stage 1 only once per step, after the last backward and after the optimizer.
        var z1 = ZeroMicroBatchComm.Collectives(1e9, Config(1), Node);
        var z2 = ZeroMicroBatchComm.Collectives(1e9, Config(2), Node);
        var z3 = ZeroMicroBatchComm.Collectives(1e9, Config(3), Node);
        Assert.Equal(new ZeroCollectives(0, 0), z1);
        Assert.Equal((0.0, 4e9), (ZeroMicroBatchComm.GatherBytes(1e9, Config(2)), ZeroMicroBatchComm.ReduceScatterBytes(1e9, Config(2))));
        Assert.Equal((2e9, 4e9), (ZeroMicroBatchComm.GatherBytes(1e9, Config(3)), ZeroMicroBatchComm.ReduceScatterBytes(1e9, Config(3))));
        Assert.Equal(0.021896, z2.ReduceScatter, 9);
        Assert.Equal(0, z2.Gather);
        Assert.Equal(0.0109585, z3.Gather, 9);
        Assert.Equal(z2.ReduceScatter, z3.ReduceScatter);
        // Per step of 4 micro-batches: stage 2 reduce-scatters 4 x 4e9 B and gathers 2e9 B after the step; stage 3 gathers
        // 4 x 2 x 2e9 B and reduce-scatters 4 x 4e9 B, nothing after the step; stage 1 reduce-scatters 4e9 and gathers 2e9 once.
        Assert.Equal(Ring(2e9), DataParallelComm.ParameterGather(1e9, Config(2), Node, 0), 12);
        Assert.Equal(0, DataParallelComm.ParameterGather(1e9, Config(3), Node, 0));
        Assert.Equal(0, DataParallelComm.GradientReduce(1e9, Config(2), Node));
        Assert.Equal(Ring(4e9), DataParallelComm.GradientReduce(1e9, Config(1), Node), 12);
    }

    [Fact]
    public void CommunicationHidesBehindComputeOnePieceLate()
    {
        // Gathers 1 s and reduce-scatters 2 s beside a 2 s forward and a 4 s backward of 4 layers, 2 buckets. Forward: the
        // first layer's gather, 1/4 s, is waited for; the rest hides. Backward: the first layer's gather (1/4 s) and the
        // last bucket (max(2/2, 2 − 4·1/2) = 1 s) stick out: 1.25 s; on the compute stream, all 2 s of reduce-scatter do.
        var light = new ZeroCollectives(1, 2);
        Assert.Equal(new ZeroExposure(0.25, 1.25), ZeroMicroBatchComm.Exposed(light, 2, 4, 4, 2, overlapReduce: true));
        Assert.Equal(new ZeroExposure(0.25, 2.25), ZeroMicroBatchComm.Exposed(light, 2, 4, 4, 2, overlapReduce: false));
        // Gathers 3 s and reduce-scatters 4 s, 4 buckets: forward 3 − 2·3/4 = 1.5 s; in backward 7 s of messages share the
        // links beside 4 s of compute: 3 s stick out (more than the gather's 0.75 plus the last bucket's 1).
        Assert.Equal(new ZeroExposure(1.5, 3), ZeroMicroBatchComm.Exposed(new ZeroCollectives(3, 4), 2, 4, 4, 4, overlapReduce: true));
    }

    [Fact]
    public void ZeroTwoWithoutOverlapExposesEveryMicroBatchsReduceScatter()
    {
        // Per micro-batch the layers', the embedding's and the output layer's fp32 gradients are reduce-scattered on the
        // compute stream; after the step the weights are gathered once (bf16).
        double perMicroBatch = Ring(4 * Layers) + Ring(4 * Embedding) + Ring(4 * Output);
        var e = Estimator.Estimate(Model, Node, Config(2));
        Assert.Equal(4 * perMicroBatch + Ring(2 * Rank), e.Time.DataParallelComm, 12);
        // One 5e8-element bucket holds all of a rank's gradients: it is full only at the backward's end, so overlap_comm
        // hides nothing.
        Assert.Equal(e.StepTimeSeconds, Estimator.Estimate(Model, Node, Config(2, overlap: true)).StepTimeSeconds, 12);
    }

    [Theory]
    [InlineData(true, 10_000_000L)]  // 6 buckets of 1e7 elements, reduced during the backward
    [InlineData(false, null)]        // reduce-scatters on the compute stream
    public void ZeroThreeExposesTheFirstLayersGathersAndTheLastBucket(bool overlap, long? bucket)
    {
        // The layers' forward (and backward) compute per layer exceeds a layer's gather (7/8·2·12.8M B / 160 GB/s), so of
        // the layers' gathers only the first layer's, G/4, sticks out of each pass; the rest slows the compute it hides behind
        // by NCCL's 20% share of the SMs. Of the layers' reduce-scatter R the last of 6 buckets sticks out, R/6 (overlapped),
        // or all of it. The embedding's and output layer's two gathers and reduce-scatter are counted whole.
        double g = Ring(2 * Layers), r = Ring(4 * Layers), tail = overlap ? r / 6 : r;
        double forward = g / 4 + 0.2 * (g - g / 4);
        double backward = g / 4 + tail + 0.2 * (g + r - g / 4 - tail);
        double ends = 2 * Ring(2 * Embedding) + Ring(4 * Embedding) + 2 * Ring(2 * Output) + Ring(4 * Output);
        var e = Estimator.Estimate(Model, Node, Config(3, overlap, bucket));
        Assert.Equal(4 * (forward + backward + ends), e.Time.DataParallelComm, 12);
    }
}
