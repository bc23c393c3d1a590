using System.Collections.Concurrent;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// Every valid configuration of a <see cref="SearchSpace"/>, generated valid by construction: each rule of
/// <see cref="RunDescription.Validate"/> is applied at the level of the tree where its values are fixed, so no
/// invalid subtree is ever walked. Tests prove the set equal to "every combination that Validate accepts".
/// Tree: layout (dp, tp, pp, split of the layers over the stages (<see cref="PipelineSplits"/>), cp, cp exchange,
/// interleaving (none for uneven stages, only with the ends counted as layers), sp, micro-batch, p) -> ZeRO stage (2 and 3
/// only where pp = 1, except under Megatron-FSDP version 1) ->
/// recomputation -> offload ratio.
/// </summary>
public sealed class SpaceEnumerator
{
    private readonly SearchSpace _space;
    private readonly IReadOnlyList<double> _offloadGrid;
    private readonly IReadOnlyList<int> _zeroWithPipeline;

    public SpaceEnumerator(SearchSpace space)
    {
        _space = space;
        _offloadGrid = space.Constraints.OffloadGrid();
        // --overlap-param-gather overlaps the distributed optimizer's gather: it leaves only the stages that have one.
        // Megatron-FSDP version 2 runs only optim_grads_params (stage 3) and without tensor, pipeline and context
        // parallelism (MegatronFsdp.Validate).
        ZeroStages = (space.Constraints.ZeroStage ?? [0, 1, 2, 3]).Distinct().Order()
            .Where(z => z >= 1 || !space.Constraints.Implementation.OverlapOrDefault.ParamGather)
            .Where(z => !OnlyUnsplit || z == 3).ToArray();
        // Megatron-FSDP version 1 shards at every stage with pipelining; DeepSpeed's engine refuses stages 2 and 3 there.
        _zeroWithPipeline = space.Constraints.Implementation.Fsdp is null ? ZeroStages.Where(z => z < 2).ToArray() : ZeroStages;
        // Megatron-Kwai's offload is a fork without Megatron-FSDP.
        if (space.Constraints.Implementation.Fsdp is not null) _offloadGrid = _offloadGrid.Where(a => a == 0).ToArray();
    }

    /// <summary>Megatron-FSDP version 2: no tensor, pipeline or context parallelism.</summary>
    private bool OnlyUnsplit => _space.Constraints.Implementation.Fsdp is { Version: 2 };

    private ModelSpec Model => _space.Model;
    private SearchConstraints C => _space.Constraints;

    /// <summary>The ZeRO stages searched (0 replicated; 1 Megatron's distributed optimizer; 2; 3).</summary>
    public IReadOnlyList<int> ZeroStages { get; }

    /// <summary>The ZeRO stages valid for a layout, ascending: DeepSpeed's stages 2 and 3 only without pipeline parallelism
    /// (RunDescription.Validate: DeepSpeed's pipeline engine refuses them), every stage under Megatron-FSDP.</summary>
    public IReadOnlyList<int> ZeroOptions(Layout layout) =>
        layout.PipelineParallel == 1 ? ZeroStages : _zeroWithPipeline;

    private static bool Allowed<T>(IReadOnlyList<T>? only, T value) => only is null || only.Contains(value);

    /// <summary>Every valid layout.</summary>
    public IEnumerable<Layout> Layouts()
    {
        var m = Model;
        int world = _space.Cluster.WorldSize, gbs = _space.GlobalBatch;
        foreach (int tp in Divisors.Of(world))
        {
            if (!Allowed(C.TensorParallel, tp) || (OnlyUnsplit && tp > 1)) continue;
            if (m.NumAttentionHeads % tp != 0 || m.NumQueryGroups % tp != 0 || m.FfnHiddenSize % tp != 0) continue;
            if (C.TensorParallelWithinNode && _space.Cluster.GpusPerNode % tp != 0) continue;
            foreach (int pp in Divisors.Of(world / tp))
            {
                if (!Allowed(C.PipelineParallel, pp) || (OnlyUnsplit && pp > 1)) continue;
                foreach (var split in PipelineSplits.Of(m, pp, C.LayersInFirstPipelineStage, C.LayersInLastPipelineStage).Where(CountsAsAsked))
                foreach (int cp in Divisors.Of(world / (tp * pp)))
                {
                    if (!Allowed(C.ContextParallel, cp) || (OnlyUnsplit && cp > 1)) continue;
                    if (cp > 1 && m.SeqLength % (2L * cp) != 0) continue; // causal load balancing: 2·cp chunks
                    int dp = world / (tp * pp * cp);
                    if (!Allowed(C.DataParallel, dp) || gbs % dp != 0) continue;
                    foreach (var (comm, a2a) in ContextParallelCommOptions(tp, cp))
                        foreach (int mb in Divisors.Of(gbs / dp))
                        {
                            if (!Allowed(C.MicroBatch, mb)) continue;
                            int microBatches = gbs / (mb * dp);
                            foreach (int? l in VirtualStageOptions(pp, microBatches, split))
                                foreach (bool sp in SequenceParallelOptions(tp, cp))
                                    foreach (double p in C.SyncFactors)
                                    {
                                        if (p < 1 && (tp < 2 || sp)) continue; // partial sync needs TP and replaces SP's collectives
                                        yield return new Layout(dp, tp, pp, cp, l, sp, mb, p, comm, a2a, split);
                                    }
                        }
                }
            }
        }
    }

    private static readonly ContextParallelCommType[] AllContextParallelComms = Enum.GetValues<ContextParallelCommType>();

    /// <summary>The exchanges tried, with a2a+p2p's all-to-all size: none to choose without context parallelism (Megatron's
    /// default stands); otherwise those asked for, the all-to-all over only as many ranks as every tensor-parallel rank's
    /// heads and query groups split over (Ulysses over all c; a2a+p2p over each proper divisor above 1).</summary>
    private IEnumerable<(ContextParallelCommType Comm, int? AllToAll)> ContextParallelCommOptions(int tp, int cp)
    {
        if (cp == 1)
        {
            yield return (ContextParallelCommType.P2p, null);
            yield break;
        }
        bool HeadsSplit(int ways) => Model.NumAttentionHeads / tp % ways == 0 && Model.NumQueryGroups / tp % ways == 0;
        foreach (var comm in C.ContextParallelComm ?? AllContextParallelComms)
        {
            if (comm == ContextParallelCommType.A2aP2p)
            {
                foreach (int a2a in Divisors.Of(cp))
                    if (a2a > 1 && a2a < cp && HeadsSplit(a2a)) yield return (comm, a2a);
            }
            else if (comm != ContextParallelCommType.A2a || HeadsSplit(cp)) yield return (comm, null);
        }
    }

    /// <summary>Whether a split counts the embedding and the loss as layers where the constraints ask for it.</summary>
    private bool CountsAsAsked(PipelineSplit split) =>
        (!C.AccountForEmbeddingInPipelineSplit || split.AccountForEmbedding) && (!C.AccountForLossInPipelineSplit || split.AccountForLoss);

    /// <summary>Layers per virtual stage under a split: none for uneven stages; interleaved only where the embedding or loss
    /// counts as a layer (<see cref="PipelineSplits"/>); either for the even split.</summary>
    private IEnumerable<int?> VirtualStageOptions(int pp, int microBatches, PipelineSplit split)
    {
        if (!split.CountsEnds && Allowed(C.LayersPerVirtualStage, 0)) yield return null;
        // Interleaving: pp >= 2, at least 2 chunks per rank, micro-batches a multiple of pp (Megatron's schedule).
        if (split.Uneven || pp < 2 || microBatches % pp != 0) yield break;
        int layersPerRank = split.ToConfig(pp).LayersInPipelineSplit(Model) / pp;
        foreach (int l in Divisors.Of(layersPerRank))
            if (layersPerRank / l >= 2 && Allowed(C.LayersPerVirtualStage, l)) yield return l;
    }

    private IEnumerable<bool> SequenceParallelOptions(int tp, int cp)
    {
        if (Allowed(C.SequenceParallel, false)) yield return false;
        if (tp >= 2 && (Model.SeqLength / cp) % tp == 0 && Allowed(C.SequenceParallel, true)) yield return true;
    }

    /// <summary>Valid recomputations of a layout, none first. They depend only on whether the norm recompute is blocked
    /// (tensor parallelism without sequence parallelism) and on the model chunks' sizes (pipeline size, interleaving, split),
    /// so layouts alike in those share one list.</summary>
    public IReadOnlyList<RecomputeSpec> RecomputeOptions(Layout layout) =>
        _recompute.GetOrAdd((layout.TensorParallel > 1 && !layout.SequenceParallel, layout.PipelineParallel, layout.LayersPerVirtualStage, layout.Split),
            _ => RecomputeChoices.Options(Model, layout, C));

    private readonly ConcurrentDictionary<(bool NormBlocked, int Pipeline, int? LayersPerVirtualStage, PipelineSplit Split), IReadOnlyList<RecomputeSpec>> _recompute = new();

    /// <summary>Valid offload ratios of a layout, ascending: the grid where offload is allowed, else only 0 (if searched).</summary>
    public IReadOnlyList<double> OffloadOptions(Layout layout) =>
        layout.AllowsOffload ? _offloadGrid : _offloadGrid.Where(a => a == 0).ToArray();

    /// <summary>How many configurations a layout holds.</summary>
    public long LeafCount(Layout layout) =>
        (long)ZeroOptions(layout).Count * RecomputeOptions(layout).Count * OffloadOptions(layout).Count;

    /// <summary>Every valid configuration of the space (for brute force and tests; the search never lists them all).</summary>
    public IEnumerable<RunDescription> All()
    {
        foreach (var layout in Layouts())
            foreach (int zero in ZeroOptions(layout))
                foreach (var r in RecomputeOptions(layout))
                    foreach (double a in OffloadOptions(layout))
                        yield return layout.ToConfig(_space.GlobalBatch, zero, r, a, _space.Constraints.Implementation);
    }
}
