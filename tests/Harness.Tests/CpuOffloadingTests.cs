using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>Megatron-core's --cpu-offloading-num-layers N in the simulator, derived by hand on Llama-7B (32 layers) on 8 GPUs
/// (d 8): the first N layers' activations leave the GPU, and a copy stalls only what its window's layers cannot hide.</summary>
public class CpuOffloadingTests
{
    private static readonly ModelSpec Llama = ModelPresets.All["llama-7b"];
    private static readonly RunDescription Plain = new(DataParallel: 8, MicroBatch: 1, GlobalBatch: 32, Precision: Precision.Bf16);

    [Fact]
    public void TransformerEnginesWindowsCoverTheLayers()
    {
        // cpu_offload_v1's layer_window_map, worked out: 32 layers, 16 groups: every second layer; 10 of 32: 3 layers each,
        // the first two windows one longer (4, 8, then 11, 14, ..., 31).
        Assert.Equal(Enumerable.Range(0, 16).Select(g => 2 * g + 1), Enumerable.Range(0, 16).Select(g => CpuOffloading.Window(32, 16, g)));
        Assert.Equal([3, 7, 10, 13, 16, 19, 22, 25, 28, 31], Enumerable.Range(0, 10).Select(g => CpuOffloading.Window(32, 10, g)));
    }

    /// <summary>
    /// With the host link set so that one layer's copy takes 1.5 layer forwards, N = 16 gives windows of one layer for the
    /// first copy (after layer 0 it overlaps layer 1 only: 0.5 forward exposed) and two layers for the others (hidden);
    /// backward's layers are longer than a copy, so its reloads hide. Memory: 16 layers' saved activations leave the GPU,
    /// one layer's is back ahead of its backward.
    /// </summary>
    [Fact]
    public void TheFirstCopyStallsHalfALayerAndSixteenLayersLeaveTheGpu()
    {
        var h100 = GpuPresets.All["h100-sxm"];
        var probe = PipelineCosts.Build(Llama, ClusterSpec.Of(h100, 8), Plain);
        double f = probe.Chunk.Forward / Llama.NumLayers, b = probe.Chunk.Backward / Llama.NumLayers;
        double saved = Activations.Layer(Llama, Plain).Saved;
        var cluster = ClusterSpec.Of(h100 with { HostLinkBytesPerSecond = saved / (1.5 * f) }, 8);
        var offloading = Plain with { CpuOffloadingLayers = 16 };
        var k0 = PipelineCosts.Build(Llama, cluster, Plain);
        var k = PipelineCosts.Build(Llama, cluster, offloading);
        Assert.True(b > 1.5 * f);
        Assert.Equal(0.5 * f, k.CpuOffloadForwardStall, 1e-12);
        Assert.Equal(0, k.CpuOffloadBackwardStall);
        Assert.Equal(k0.Chunk.Activations - 16 * saved, k.Chunk.Activations, 1e-3);
        Assert.Equal(k0.BackwardTransient + saved, k.BackwardTransient, 1e-3);
        var e0 = Estimator.Estimate(Llama, cluster, Plain);
        var e = Estimator.Estimate(Llama, cluster, offloading);
        int m = Plain.NumMicroBatches;
        Assert.Equal(m * 0.5 * f, e.Time.OffloadStall, 1e-9);
        Assert.Equal(e0.StepTimeSeconds + m * 0.5 * f, e.StepTimeSeconds, 1e-9);
        Assert.Equal(e0.PeakMemoryBytes - 15 * saved, e.PeakMemoryBytes, saved * 1e-6);
    }

    [Fact]
    public void MegatronCoreRefusesPipelinesRecomputationAndTooManyLayers()
    {
        static string Error(RunDescription d) => Assert.Single(d.Validate(Llama, d.WorldSize));
        Assert.Contains("pipeline parallelism", Error(Plain with { DataParallel = 4, PipelineParallel = 2, CpuOffloadingLayers = 2 }));
        Assert.Contains("--recompute-granularity", Error(Plain with { Recompute = RecomputeSpec.Selective, CpuOffloadingLayers = 2 }));
        Assert.Equal("--cpu-offloading-num-layers 32 must be at least 0 and less than --num-layers 32.", Error(Plain with { CpuOffloadingLayers = 32 }));
    }
}
