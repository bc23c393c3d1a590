using Harness.Simulator;
using Harness.Simulator.Specs;

namespace Harness.Tests;

public class EstimatorTests
{
    private static readonly ModelSpec Llama175 = ModelPresets.All["llama-175b"];
    private static readonly ClusterSpec H800x256 = ClusterSpec.Of(GpuPresets.All["h800"], 256);

    /// <summary>Megatron-Kwai Table 8, "theirs": t4 c1 p8 l2, ckpt=ours, alpha 0.63, distributed optimizer, SP.</summary>
    private static readonly RunDescription Theirs = new(DataParallel: 8, TensorParallel: 4, PipelineParallel: 8,
        LayersPerVirtualStage: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 256, Recompute: RecomputeSpec.Kwai,
        OffloadRatio: 0.63, ZeroStage: 1, Precision: Precision.Bf16);

    /// <summary>Table 8, "their baseline": t2 c2 p16 l1, full recomputation.</summary>
    private static readonly RunDescription Baseline = new(DataParallel: 4, TensorParallel: 2, PipelineParallel: 16,
        LayersPerVirtualStage: 1, ContextParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 256,
        Recompute: RecomputeSpec.FullUniform(), ZeroStage: 1, Precision: Precision.Bf16);

    [Fact]
    public void UnderOneHardwareQueueOverlappedP2pCostsWhatBlockingP2pCosts()
    {
        // Table 8's baseline: each p2p message is the SP shard s/(c·t) x h in bf16 = 2048 x 12288 x 2 B = 50.3 MB, across
        // the network (16-rank stages) at 12.5 GB/s: 4.03 ms. Per iteration a middle rank sends m·2v = 64·12 = 768 of them.
        double message = 8192 / 4 * 12288 * 2 / 12.5e9 + 6e-6;
        Assert.Equal(0.004033, message, 6);
        Harness.Simulator.Specs.RunDescription With(bool overlap, int queues) =>
            Baseline with { Overlap = new OverlapSpec(GradientReduce: false, PipelineP2p: overlap, DeviceMaxConnections: queues) };
        double oneQueue = Estimator.Estimate(Llama175, H800x256, With(true, 1)).StepTimeSeconds;
        double blocking = Estimator.Estimate(Llama175, H800x256, With(false, 1)).StepTimeSeconds;
        double hidden = Estimator.Estimate(Llama175, H800x256, With(true, 8)).StepTimeSeconds;
        Assert.Equal(blocking, oneQueue, 9);
        // With eight queues the steady state hides the sends; what one queue adds is most of the 768 sends' 3.1 s.
        Assert.InRange(oneQueue - hidden, 0.6 * 768 * message, 768 * message);
        // Megatron-LM's rule when the launch does not say: one queue with tensor parallelism, CUDA's eight without.
        Assert.Equal(1, Baseline.DeviceMaxConnections);
        Assert.Equal(8, (Baseline with { TensorParallel = 1, DataParallel = 8 }).DeviceMaxConnections);
    }

    [Fact]
    public void Table8IsWithinFifteenPercentOfThePublishedThroughput()
    {
        var theirs = Estimator.Estimate(Llama175, H800x256, Theirs);
        var baseline = Estimator.Estimate(Llama175, H800x256, Baseline);
        Assert.InRange(theirs.TokensPerSecondPerGpu, 387 * 0.85, 387 * 1.15);
        Assert.InRange(baseline.TokensPerSecondPerGpu, 299 * 0.85, 299 * 1.15);
        Assert.True(theirs.Fits && baseline.Fits);
        // Without recomputation the baseline runs out of memory, as published.
        Assert.False(Estimator.Estimate(Llama175, H800x256, Baseline with { Recompute = RecomputeSpec.None }).Fits);
    }

    [Fact]
    public void BreakdownAddsUpToTheStepTime()
    {
        var e = Estimator.Estimate(Llama175, H800x256, Theirs);
        Assert.Equal(e.StepTimeSeconds, e.Time.Total, 1e-9 * e.StepTimeSeconds);
        Assert.Equal(e.PeakMemoryBytes, e.Memory.Total, 1.0);
        Assert.Equal(e.PeakMemoryBytes, (long)Math.Ceiling(e.Stages.Max(s => s.Memory.Total)));
    }

    [Fact]
    public void MfuFollowsTheOneFlopCounter()
    {
        var e = Estimator.Estimate(Llama175, H800x256, Theirs);
        double flops = Harness.Simulator.Costs.Flops.ModelFlopsPerToken(Llama175);
        Assert.Equal(e.TokensPerSecondPerGpu * flops / 989e12, e.Mfu, 12);
        Assert.Equal(256.0 * 8192 / e.StepTimeSeconds / 256, e.TokensPerSecondPerGpu, 9);
    }

    [Fact]
    public void MoreRecomputationMeansLessActivationMemoryAndMoreTime()
    {
        var none = Estimator.Estimate(Llama175, H800x256, Baseline with { Recompute = RecomputeSpec.None });
        var kwai = Estimator.Estimate(Llama175, H800x256, Baseline with { Recompute = RecomputeSpec.Kwai });
        var full = Estimator.Estimate(Llama175, H800x256, Baseline);
        Assert.True(none.Memory.Activations > kwai.Memory.Activations && kwai.Memory.Activations > full.Memory.Activations);
        Assert.True(none.StepTimeSeconds < kwai.StepTimeSeconds && kwai.StepTimeSeconds < full.StepTimeSeconds);
    }

    [Fact]
    public void MoreOffloadMeansLessMemory()
    {
        double previous = double.MaxValue;
        foreach (double alpha in new[] { 0.0, 0.25, 0.5, 0.75, 1.0 })
        {
            var e = Estimator.Estimate(Llama175, H800x256, Theirs with { OffloadRatio = alpha });
            Assert.True(e.PeakMemoryBytes < previous, $"alpha {alpha}: {e.PeakMemoryBytes} not below {previous}");
            previous = e.PeakMemoryBytes;
        }
    }

    [Fact]
    public void PartialSynchronizationSpeedsUpTensorParallelism()
    {
        var m = ModelPresets.All["caat-7b"];
        var cluster = ClusterSpec.Of(GpuPresets.All["h100-sxm"], 8);
        var c = new RunDescription(TensorParallel: 8, GlobalBatch: 8, Precision: Precision.Bf16);
        var full = Estimator.Estimate(m, cluster, c);
        var half = Estimator.Estimate(m, cluster, c with { SyncFactor = 0.5 });
        var quarter = Estimator.Estimate(m, cluster, c with { SyncFactor = 0.25 });
        // The fork reduces the partial gradient in fp32 and before the data-gradient GEMM (blocking), where full
        // synchronization's backward all-reduce hides behind the weight-gradient GEMM: p must fall below 1/2 to win.
        Assert.True(quarter.Time.TensorParallelComm < half.Time.TensorParallelComm);
        Assert.True(quarter.StepTimeSeconds < full.StepTimeSeconds);
    }

    [Fact]
    public void ClosedFormScreensCloseToTheSimulation()
    {
        foreach (var c in new[] { Theirs, Baseline })
        {
            var full = Estimator.Estimate(Llama175, H800x256, c);
            var fast = Estimator.EstimateClosedForm(Llama175, H800x256, c);
            Assert.InRange(fast.StepTimeSeconds / full.StepTimeSeconds, 0.97, 1.03);
            Assert.InRange(fast.PeakMemoryBytes / full.PeakMemoryBytes, 0.97, 1.03);
            var bounds = Estimator.Bounds(Llama175, H800x256, c);
            Assert.True(bounds.MinStepTimeSeconds <= full.StepTimeSeconds && bounds.MinStepTimeSeconds <= fast.StepTimeSeconds);
            Assert.True(bounds.MinPeakMemoryBytes <= full.PeakMemoryBytes && bounds.MinPeakMemoryBytes <= fast.PeakMemoryBytes);
        }
    }

    [Fact]
    public void ClosedFormTracksTheSimulationAcrossLayouts()
    {
        // Every valid layout of Llama-65B on 256 H800s over t, p, cp, interleaving, recomputation and offload.
        var m = ModelPresets.All["llama-65b"];
        int compared = 0;
        foreach (int t in new[] { 1, 2, 4, 8 })
        foreach (int p in new[] { 1, 2, 4, 8, 16 })
        foreach (int cp in new[] { 1, 2 })
        foreach (int? l in new int?[] { null, 1, 2, 5 })
        foreach (var r in new[] { RecomputeSpec.None, RecomputeSpec.FullUniform(), RecomputeSpec.Kwai })
        foreach (double alpha in new[] { 0.0, 0.5 })
        {
            var c = new RunDescription(256 / (t * p * cp), t, p, l, cp, t > 1, 1, 256, r, alpha, 1, Precision: Precision.Bf16);
            if (Estimator.Validate(m, H800x256, c).Count > 0) continue;
            var full = Estimator.Estimate(m, H800x256, c);
            var fast = Estimator.EstimateClosedForm(m, H800x256, c);
            Assert.InRange(fast.StepTimeSeconds / full.StepTimeSeconds, 0.92, 1.08);
            Assert.InRange(fast.PeakMemoryBytes / full.PeakMemoryBytes, 0.97, 1.03);
            compared++;
        }
        Assert.True(compared > 100, $"only {compared} layouts compared");
    }

    [Fact]
    public void InvalidConfigurationsThrowWithEveryReason()
    {
        var bad = Theirs with { TensorParallel = 5, GlobalBatch = 255 };
        var e = Assert.Throws<InvalidConfigException>(() => Estimator.Estimate(Llama175, H800x256, bad));
        Assert.Contains(e.Reasons, r => r.Contains("world size 256"));
        Assert.Contains(e.Reasons, r => r.Contains("--num-attention-heads 96 is not divisible by --tensor-model-parallel-size 5"));
        Assert.Contains(e.Reasons, r => r.Contains("--global-batch-size 255"));
    }
}
