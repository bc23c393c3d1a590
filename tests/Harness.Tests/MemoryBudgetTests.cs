using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>What the caching allocator reserves and whether it fits: model states as allocated, the step's allocations with
/// 15% fragmentation (none under expandable segments), against the GPU's memory less 2 GiB outside PyTorch.</summary>
public class MemoryBudgetTests
{
    private const double GiB = 1L << 30;

    [Fact]
    public void TheStepsAllocationsFragmentAndTheModelStatesDoNot()
    {
        var c = new RunDescription(Precision: Precision.Bf16);
        Assert.Equal(40 * GiB + 20 * GiB * 1.15, MemoryBudget.ReservedBytes(40 * GiB, 20 * GiB, c), 1);
        Assert.Equal(60 * GiB, MemoryBudget.ReservedBytes(40 * GiB, 20 * GiB, c with { ExpandableSegments = true }), 1);
        var h100 = GpuPresets.All["h100-sxm"];
        Assert.Equal(h100.MemoryBytes - 2 * GiB, MemoryBudget.UsableBytes(h100));
        Assert.True(MemoryBudget.Fits(h100.MemoryBytes - 2 * GiB, h100));
        Assert.False(MemoryBudget.Fits(h100.MemoryBytes - 2 * GiB + 1, h100));
    }

    [Fact]
    public void TheEstimateReservesWhatItsPeakStageAllocatesWithFragmentation()
    {
        var m = ModelPresets.All["llama-7b"];
        var cluster = ClusterSpec.Of(GpuPresets.All["h100-sxm"], 8);
        var c = new RunDescription(DataParallel: 4, TensorParallel: 2, SequenceParallel: true, GlobalBatch: 128, ZeroStage: 1, Precision: Precision.Bf16);
        var e = Estimator.Estimate(m, cluster, c);
        var peak = e.Stages[e.PeakStage].Memory;
        double expected = peak.Weights + peak.Gradients + peak.Optimizer + 1.15 * (peak.Activations + peak.Buffers);
        Assert.Equal(Math.Ceiling(expected), e.ReservedBytes, 0);
        Assert.Equal(e.ReservedBytes <= MemoryBudget.UsableBytes(cluster.Gpu), e.Fits);
    }
}
