using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// The part of a configuration that fixes how ranks are laid out and how a batch is cut: data, tensor,
/// pipeline and context parallel sizes, interleaving, sequence parallelism, micro-batch, the sync factor p and how
/// context-parallel ranks exchange attention's inputs (Megatron's default p2p where c = 1, which has no exchange), with
/// the all-to-all level's size under a2a+p2p.
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
    int? HierarchicalAllToAllSize = null)
{
    /// <summary>Model chunks per pipeline rank (v).</summary>
    public int VirtualStages(ModelSpec model) =>
        LayersPerVirtualStage is int l ? model.NumLayers / (PipelineParallel * l) : 1;

    /// <summary>Layers of one model chunk: L/(p·v).</summary>
    public int LayersPerModelChunk(ModelSpec model) => model.NumLayers / (PipelineParallel * VirtualStages(model));

    /// <summary>Megatron-Kwai's offload needs the interleaved schedule and at least 3 pipeline stages (REFERENCE.md).</summary>
    public bool AllowsOffload => LayersPerVirtualStage is not null && PipelineParallel >= 3;

    /// <summary>The full configuration at one ZeRO stage, recomputation and offload ratio, run by the implementation
    /// <paramref name="implementation"/> describes (default: Megatron-LM's).</summary>
    public RunDescription ToConfig(int globalBatch, int zeroStage, RecomputeSpec recompute, double offloadRatio, RunDescription? implementation = null) =>
        (implementation ?? Default) with
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
