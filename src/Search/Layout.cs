using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// The part of a configuration that fixes how ranks are laid out and how a batch is cut: data, tensor,
/// pipeline and context parallel sizes, interleaving, sequence parallelism, micro-batch, the sync factor p, how
/// context-parallel ranks exchange attention's inputs (Megatron's default p2p where c = 1, which has no exchange), with
/// the all-to-all level's size under a2a+p2p, and the split of the layers over the pipeline stages (<see cref="PipelineSplit"/>).
/// Under one layout the search varies the ZeRO stage, the recomputation and the offload ratio.
/// </summary>
public readonly record struct Layout(
    int DataParallel,
    int TensorParallel,
    int PipelineParallel,
    int ContextParallel,
    int? LayersPerVirtualStage,
    bool SequenceParallel,
    int MicroBatch,
    double SyncFactor,
    ContextParallelCommType ContextParallelComm = ContextParallelCommType.P2p,
    int? HierarchicalAllToAllSize = null,
    PipelineSplit Split = default)
{
    /// <summary>The distinct numbers of layers its model chunks hold (<see cref="RunDescription.ChunkSizes"/>).</summary>
    public IEnumerable<int> ChunkSizes(ModelSpec model) => ToConfig(1, 0, RecomputeSpec.None, 0).ChunkSizes(model);

    /// <summary>Megatron-Kwai's offload needs the interleaved schedule and at least 3 pipeline stages (REFERENCE.md).</summary>
    public bool AllowsOffload => LayersPerVirtualStage is not null && PipelineParallel >= 3;

    /// <summary>The full configuration at one ZeRO stage, recomputation and offload ratio, run by the implementation
    /// <paramref name="implementation"/> describes (default: Megatron-LM's).</summary>
    public RunDescription ToConfig(int globalBatch, int zeroStage, RecomputeSpec recompute, double offloadRatio, RunDescription? implementation = null) =>
        Split.Apply(implementation ?? Default) with
        {
            DataParallel = DataParallel,
            TensorParallel = TensorParallel,
            PipelineParallel = PipelineParallel,
            LayersPerVirtualStage = LayersPerVirtualStage,
            ContextParallel = ContextParallel,
            ContextParallelComm = ContextParallelComm,
            HierarchicalAllToAllSize = HierarchicalAllToAllSize,
            SequenceParallel = SequenceParallel,
            MicroBatch = MicroBatch,
            GlobalBatch = globalBatch,
            Recompute = recompute,
            OffloadRatio = offloadRatio,
            ZeroStage = zeroStage,
            SyncFactor = SyncFactor,
        };

    private static readonly RunDescription Default = new();
}
