using Harness.Simulator.Specs;

namespace Harness.Executor.Transformer;

/// <summary>Layers [First, First + Count) of a model chunk, run as one unit; when <see cref="Recomputed"/>, only the unit's input
/// is kept and backward runs the layers again.</summary>
public readonly record struct LayerGroup(int First, int Count, bool Recomputed);

/// <summary>
/// Which layers of a model chunk full recomputation checkpoints, as Megatron-core's TransformerBlock._checkpointed_forward
/// does (megatron/core/transformer/transformer_block.py; megatron/core/recompute.py today): --recompute-method uniform cuts
/// the chunk's layers into groups of --recompute-num-layers (the last one shorter when they do not divide), each group's
/// input kept and the group recomputed as one; block recomputes each of the first --recompute-num-layers layers alone and
/// lets the rest keep everything. Without full recomputation every layer is its own group, not recomputed (selective
/// recomputation works inside the attention).
/// </summary>
public static class RecomputeGroups
{
    public static IReadOnlyList<LayerGroup> Of(int layers, RecomputeSpec recompute)
    {
        var groups = new List<LayerGroup>();
        bool full = recompute.Granularity == RecomputeGranularity.Full;
        int n = Math.Max(1, recompute.NumLayers);
        if (full && recompute.Method == RecomputeMethod.Uniform)
            for (int first = 0; first < layers; first += n) groups.Add(new LayerGroup(first, Math.Min(n, layers - first), true));
        else
            for (int layer = 0; layer < layers; layer++) groups.Add(new LayerGroup(layer, 1, full && layer < n));
        return groups;
    }
}
