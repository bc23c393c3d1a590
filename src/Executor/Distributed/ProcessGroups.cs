using Harness.Simulator.Specs;

namespace Harness.Executor.Distributed;

/// <summary>
/// This rank's process groups, like Megatron-core's parallel_state: one communicator per kind of parallelism,
/// split from the world communicator along <see cref="RankOrder"/>'s grid. Group ranks follow world-rank order,
/// so a group's rank is the rank's coordinate along that dimension.
/// </summary>
public sealed class ProcessGroups : IDisposable
{
    private ProcessGroups(ICommunicator world, RankOrder layout)
    {
        if (world.Size != layout.WorldSize)
            throw new ArgumentException($"world size {world.Size} != tensor {layout.TensorParallel} x context {layout.ContextParallel} x data {layout.DataParallel} x pipeline {layout.PipelineParallel}.");
        World = world;
        Layout = layout;
        (TensorRank, ContextRank, DataRank, PipelineRank) = layout.Coordinates(world.Rank);
        Tensor = SplitAlong(ParallelDims.Tensor, "tp");
        Context = SplitAlong(ParallelDims.Context, "cp");
        Data = SplitAlong(ParallelDims.Data, "dp");
        DataWithContext = SplitAlong(ParallelDims.Data | ParallelDims.Context, "dp-cp");
        Pipeline = SplitAlong(ParallelDims.Pipeline, "pp");
        ModelParallel = SplitAlong(ParallelDims.Tensor | ParallelDims.Pipeline, "tp-pp");
        // Megatron's embedding group: the first and last pipeline stage, which both hold the tied word embedding.
        bool holdsEmbedding = PipelineRank == 0 || PipelineRank == layout.PipelineParallel - 1;
        Embedding = layout.PipelineParallel > 1
            ? world.Split(holdsEmbedding ? layout.GroupColor(world.Rank, ParallelDims.Pipeline) : ICommunicator.NoColor, world.Rank, "embedding")
            : null;
    }

    /// <summary>Splits <paramref name="world"/> into the groups of <paramref name="layout"/>; collective over the world.</summary>
    public static ProcessGroups Create(ICommunicator world, RankOrder layout) => new(world, layout);

    public ICommunicator World { get; }
    public RankOrder Layout { get; }
    public int TensorRank { get; }
    public int ContextRank { get; }
    public int DataRank { get; }
    public int PipelineRank { get; }

    public ICommunicator Tensor { get; }
    public ICommunicator Context { get; }
    public ICommunicator Data { get; }

    /// <summary>Data and context ranks together: gradients are averaged over this group when cp > 1 (Megatron's data_parallel_group with context parallel).</summary>
    public ICommunicator DataWithContext { get; }
    public ICommunicator Pipeline { get; }

    /// <summary>Tensor and pipeline ranks of one model replica: the gradient norm is summed over it.</summary>
    public ICommunicator ModelParallel { get; }

    /// <summary>First and last pipeline stage of this pipeline; null on middle stages and without pipeline parallelism.</summary>
    public ICommunicator? Embedding { get; }

    public bool IsFirstStage => PipelineRank == 0;
    public bool IsLastStage => PipelineRank == Layout.PipelineParallel - 1;

    private ICommunicator SplitAlong(ParallelDims dims, string name) =>
        World.Split(Layout.GroupColor(World.Rank, dims), World.Rank, name)!;

    /// <summary>Every communicator of this rank, the world first.</summary>
    public IEnumerable<ICommunicator> All =>
        new[] { World, Tensor, Context, Data, DataWithContext, Pipeline, ModelParallel, Embedding }.OfType<ICommunicator>();

    /// <summary>Frees the split groups; the world communicator belongs to the caller.</summary>
    public void Dispose()
    {
        foreach (var g in All.Skip(1)) g.Dispose();
    }
}
