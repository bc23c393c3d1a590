namespace Harness.Simulator.Specs;

/// <summary>The parallel dimensions of a rank grid, fastest-varying first in <see cref="RankOrder"/>'s order.</summary>
[Flags]
public enum ParallelDims
{
    Tensor = 1,
    Context = 2,
    Data = 4,
    Pipeline = 8,
}

/// <summary>
/// Where each world rank sits in the tp x cp x dp x pp grid, in Megatron-core's default order "tp-cp-ep-dp-pp"
/// (megatron/core/parallel_state.py, initialize_model_parallel's `order` argument, expert parallelism 1):
/// tensor-parallel rank varies fastest, then context, then data, then pipeline, so
/// rank = tp + t·(cp + c·(dp + d·pp)). Tensor-parallel groups are thus consecutive ranks (one node's NVLink
/// domain) and pipeline stages are furthest apart. The simulator places groups on nodes by it (Topology), the executor
/// splits its process groups by it. Pure: no communication.
/// </summary>
public readonly record struct RankOrder(int TensorParallel, int ContextParallel, int DataParallel, int PipelineParallel)
{
    public int WorldSize => TensorParallel * ContextParallel * DataParallel * PipelineParallel;

    /// <summary>The order of <paramref name="worldSize"/> ranks for tp, cp and pp; data parallelism takes the rest.</summary>
    public static RankOrder For(int worldSize, int tensorParallel, int contextParallel, int pipelineParallel)
    {
        int modelParallel = tensorParallel * contextParallel * pipelineParallel;
        if (tensorParallel < 1 || contextParallel < 1 || pipelineParallel < 1 || worldSize % modelParallel != 0)
            throw new ArgumentException($"world size {worldSize} is not divisible by tensor {tensorParallel} x context {contextParallel} x pipeline {pipelineParallel} = {modelParallel}.");
        return new RankOrder(tensorParallel, contextParallel, worldSize / modelParallel, pipelineParallel);
    }

    /// <summary>The grid of a run description's layout.</summary>
    public static RankOrder Of(RunDescription c) => new(c.TensorParallel, c.ContextParallel, c.DataParallel, c.PipelineParallel);

    /// <summary>How many world ranks apart two neighbours along <paramref name="dim"/> are (one dimension).</summary>
    public int Stride(ParallelDims dim) => dim switch
    {
        ParallelDims.Tensor => 1,
        ParallelDims.Context => TensorParallel,
        ParallelDims.Data => TensorParallel * ContextParallel,
        ParallelDims.Pipeline => TensorParallel * ContextParallel * DataParallel,
        _ => throw new ArgumentOutOfRangeException(nameof(dim), dim, "one dimension"),
    };

    /// <summary>(tp, cp, dp, pp) coordinates of a world rank.</summary>
    public (int Tp, int Cp, int Dp, int Pp) Coordinates(int rank)
    {
        if (rank < 0 || rank >= WorldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {WorldSize}).");
        int tp = rank % TensorParallel; rank /= TensorParallel;
        int cp = rank % ContextParallel; rank /= ContextParallel;
        int dp = rank % DataParallel;
        return (tp, cp, dp, rank / DataParallel);
    }

    public int RankOf(int tp, int cp, int dp, int pp) =>
        tp * Stride(ParallelDims.Tensor) + cp * Stride(ParallelDims.Context) + dp * Stride(ParallelDims.Data) + pp * Stride(ParallelDims.Pipeline);

    /// <summary>
    /// Every group spanning <paramref name="dims"/> (ranks that differ only in those coordinates), each listed in
    /// grid order, the groups ordered by their smallest rank: Megatron's generate_masked_orthogonal_rank_groups.
    /// </summary>
    public IReadOnlyList<int[]> Groups(ParallelDims dims)
    {
        var order = this; // a struct's lambdas read a copy
        return Enumerable.Range(0, WorldSize).GroupBy(r => order.GroupColor(r, dims)).Select(g => g.ToArray()).OrderBy(g => g[0]).ToList();
    }

    /// <summary>The group spanning <paramref name="dims"/> that holds <paramref name="rank"/>.</summary>
    public int[] GroupOf(int rank, ParallelDims dims)
    {
        var order = this; // a struct's lambdas read a copy
        int color = GroupColor(rank, dims);
        return Enumerable.Range(0, WorldSize).Where(r => order.GroupColor(r, dims) == color).ToArray();
    }

    /// <summary>Identifies a rank's group over <paramref name="dims"/>: its rank with those coordinates zeroed.</summary>
    public int GroupColor(int rank, ParallelDims dims)
    {
        var (tp, cp, dp, pp) = Coordinates(rank);
        return RankOf(
            dims.HasFlag(ParallelDims.Tensor) ? 0 : tp,
            dims.HasFlag(ParallelDims.Context) ? 0 : cp,
            dims.HasFlag(ParallelDims.Data) ? 0 : dp,
            dims.HasFlag(ParallelDims.Pipeline) ? 0 : pp);
    }
}
