using Harness.Simulator.Specs;

namespace Harness.Executor.Training;

/// <summary>
/// The part of a run's layout that decides a checkpoint's files: how the weights are split over tensor- and
/// pipeline-parallel ranks (Megatron's mp_rank_TT[_PPP] folders; interleaving changes which layers a pipeline rank
/// holds) and in how many data-parallel shards the optimizer state lies (1: replicated). Data and context parallelism
/// do not split the weights, so a checkpoint loads under any of them; the optimizer state is re-cut when the shards
/// differ (<see cref="Checkpoint"/>). A single-device run is tensor 1 x pipeline 1. <paramref name="StageLayers"/>: the layers
/// of each pipeline stage where they differ (uneven stages: --decoder-first/last-pipeline-num-layers), null where every
/// stage holds as many.
/// </summary>
public sealed record CheckpointLayout(int TensorParallel, int PipelineParallel, int VirtualStages, int OptimizerShards, string? StageLayers = null)
{
    public static CheckpointLayout SingleDevice { get; } = new(1, 1, 1, 1);

    /// <summary>The layout of a parallel run; the distributed optimizer shards over data and context ranks together.</summary>
    public static CheckpointLayout Of(RunDescription parallel, ModelSpec model)
    {
        var layers = parallel.LayersPerStage(model).ToArray();
        return new(parallel.TensorParallel, parallel.PipelineParallel, parallel.VirtualStages(model),
            parallel.DistributedOptimizer ? parallel.DataParallel * parallel.ContextParallel : 1,
            layers.Distinct().Count() > 1 ? string.Join(", ", layers) : null);
    }

    /// <summary>Whether weights saved under this layout are split as a run of <paramref name="run"/> needs them.</summary>
    public bool SplitsWeightsLike(CheckpointLayout run) =>
        (TensorParallel, PipelineParallel, VirtualStages, StageLayers) == (run.TensorParallel, run.PipelineParallel, run.VirtualStages, run.StageLayers);

    /// <summary>Megatron's folder of tensor rank t, pipeline rank p: mp_rank_TT without pipeline parallelism, else mp_rank_TT_PPP.</summary>
    public string RankFolder(int tensorRank, int pipelineRank) =>
        PipelineParallel == 1 ? $"mp_rank_{tensorRank:D2}" : $"mp_rank_{tensorRank:D2}_{pipelineRank:D3}";

    /// <summary>Where optimizer shard <paramref name="shard"/> lies inside its rank folder: the folder itself when replicated.</summary>
    public string ShardFolder(int shard) => OptimizerShards == 1 ? "" : $"dp_rank_{shard:D3}";

    public override string ToString() =>
        $"tensor {TensorParallel} x pipeline {PipelineParallel}" + (StageLayers is null ? "" : $" (layers {StageLayers})")
        + (VirtualStages > 1 ? $" with {VirtualStages} model chunks per stage" : "");
}
