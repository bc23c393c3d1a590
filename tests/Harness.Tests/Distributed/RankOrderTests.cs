using Harness.Simulator.Specs;

namespace Harness.Tests.Distributed;

public class RankOrderTests
{
    [Fact]
    public void MatchesMegatronsDocstringExample()
    {
        // megatron/core/parallel_state.py, initialize_model_parallel: 16 GPUs, tensor 2, pipeline 4 (so data 2):
        // data groups [g0, g2], [g1, g3], [g4, g6], ...; tensor groups [g0, g1], [g2, g3], ...;
        // pipeline groups [g0, g4, g8, g12], [g1, g5, g9, g13], [g2, g6, g10, g14], [g3, g7, g11, g15].
        var layout = RankOrder.For(16, tensorParallel: 2, contextParallel: 1, pipelineParallel: 4);
        Assert.Equal(2, layout.DataParallel);
        Assert.Equal(new[] { new[] { 0, 2 }, [1, 3], [4, 6], [5, 7], [8, 10], [9, 11], [12, 14], [13, 15] }, layout.Groups(ParallelDims.Data));
        Assert.Equal(Enumerable.Range(0, 8).Select(i => new[] { 2 * i, 2 * i + 1 }), layout.Groups(ParallelDims.Tensor));
        Assert.Equal(new[] { new[] { 0, 4, 8, 12 }, [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15] }, layout.Groups(ParallelDims.Pipeline));
    }

    [Fact]
    public void ContextSitsBetweenTensorAndData()
    {
        // Order tp-cp-dp-pp with t2 c2 d2 p1: rank = tp + 2·cp + 4·dp.
        var layout = RankOrder.For(8, tensorParallel: 2, contextParallel: 2, pipelineParallel: 1);
        Assert.Equal(new[] { new[] { 0, 2 }, [1, 3], [4, 6], [5, 7] }, layout.Groups(ParallelDims.Context));
        Assert.Equal(new[] { new[] { 0, 4 }, [1, 5], [2, 6], [3, 7] }, layout.Groups(ParallelDims.Data));
        // Gradients with context parallelism are reduced over data and context ranks together.
        Assert.Equal(new[] { new[] { 0, 2, 4, 6 }, [1, 3, 5, 7] }, layout.Groups(ParallelDims.Data | ParallelDims.Context));
        Assert.Equal((1, 1, 1, 0), layout.Coordinates(7));
        Assert.Equal(new[] { 4, 6 }, layout.GroupOf(6, ParallelDims.Context));
    }

    [Fact]
    public void CoordinatesRoundTripAndGroupsPartitionTheWorld()
    {
        var layout = new RankOrder(TensorParallel: 2, ContextParallel: 3, DataParallel: 2, PipelineParallel: 2);
        for (int r = 0; r < layout.WorldSize; r++)
        {
            var (tp, cp, dp, pp) = layout.Coordinates(r);
            Assert.Equal(r, layout.RankOf(tp, cp, dp, pp));
        }
        foreach (var dims in new[] { ParallelDims.Tensor, ParallelDims.Context, ParallelDims.Data, ParallelDims.Pipeline, ParallelDims.Tensor | ParallelDims.Pipeline })
        {
            var groups = layout.Groups(dims);
            Assert.Equal(Enumerable.Range(0, 24), groups.SelectMany(g => g).Order());
        }
        Assert.Throws<ArgumentException>(() => RankOrder.For(12, 8, 1, 1));
    }
}
