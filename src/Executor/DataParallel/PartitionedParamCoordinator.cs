using Harness.Executor.Autograd;
using static TorchSharp.torch;

namespace Harness.Executor.DataParallel;

/// <summary>
/// When ZeRO 3 gathers and frees each unit's weights in one model chunk (DeepSpeed's
/// deepspeed/runtime/zero/partitioned_param_coordinator.py at 38327e0, fetch_sub_module and release_sub_module, driven by the
/// module hooks of zero/parameter_offload.py; Megatron-FSDP's pre-forward and pre-backward hooks, megatron_fsdp.py at
/// Megatron-LM d98e8a6, alike): in the forward, a unit is fetched before it runs, the next unit is prefetched on the
/// communication stream so that its all-gather runs beside this unit's compute, and the previous unit is released; the
/// backward starts by fetching the chunk's last unit (<see cref="BeforeBackward"/>, the pre-backward hook: a pipeline runs
/// other micro-batches and chunks between a chunk's forward and its backward), and a marker at each unit's input
/// (<see cref="GradReadyMarker"/>, in place of DeepSpeed's post-backward hook) releases the unit once backward has passed
/// it, fetches the unit before it, whose backward comes next, and prefetches the one before that. The units in forward
/// order are the embeddings on the chunk that embeds (fetched before the embedding), the layer groups (at their first
/// layer's input; a group of full recomputation runs, and is recomputed, as one: DeepSpeed gathers a module for its
/// recomputation too, and Megatron-FSDP gathers a recomputed layer once for its recomputation and backward) and, on the
/// chunk that computes the loss, the output layer's weights at the final norm's input (the embeddings again when tied):
/// the working set of ModelState.ZeroWorkingSet. The embeddings' backward needs no weights, so they are not gathered for it.
/// Each model chunk has its own coordinator, as Megatron-FSDP wraps each chunk on its own; nothing prefetches across chunks.
/// </summary>
public sealed class PartitionedParamCoordinator
{
    private readonly PartitionedParams parameters;
    private readonly GradBucket[] order;
    private readonly Dictionary<int, int> atPoint;
    /// <summary>Where the layer groups start in <see cref="order"/>: 1 on the chunk that embeds, else 0.</summary>
    private readonly int firstLayerUnit;

    /// <param name="embedding">The embeddings' unit, on the chunk that embeds; else null.</param>
    /// <param name="groups">Each layer group's first layer (within the chunk) and unit, in order.</param>
    /// <param name="output">The unit the output layer's weights lie in (the embeddings' when tied), on the chunk that computes
    /// the loss; else null.</param>
    /// <param name="layers">Layers of the chunk: the final norm's input is point <paramref name="layers"/>.</param>
    public PartitionedParamCoordinator(PartitionedParams parameters, GradBucket? embedding, IReadOnlyList<(int FirstLayer, GradBucket Unit)> groups,
        GradBucket? output, int layers)
    {
        this.parameters = parameters;
        firstLayerUnit = embedding is null ? 0 : 1;
        var units = new List<GradBucket>();
        if (embedding is not null) units.Add(embedding);
        units.AddRange(groups.Select(g => g.Unit));
        if (output is not null) units.Add(output);
        order = [.. units];
        var points = groups.Select((g, i) => (Point: g.FirstLayer, Index: i + firstLayerUnit));
        if (output is not null) points = points.Append((Point: layers, Index: order.Length - 1));
        atPoint = points.ToDictionary(p => p.Point, p => p.Index);
    }

    /// <summary>Before the embedding (on the chunk that embeds): its weights, and the first group's prefetched.</summary>
    public void BeforeEmbedding()
    {
        if (firstLayerUnit == 0) return;
        parameters.Fetch(order[0]);
        if (order.Length > 1) parameters.Prefetch(order[1]);
    }

    /// <summary>At the input of layer <paramref name="layer"/> in the forward (the final norm's at the number of layers): where a
    /// unit starts, the previous one is released, this one fetched and the next prefetched; the marker returned does the
    /// backward's part.</summary>
    public Tensor AtLayerInput(Tensor hidden, int layer)
    {
        if (!atPoint.TryGetValue(layer, out int t)) return hidden;
        if (t > 0 && order[t - 1] != order[t]) parameters.Release(order[t - 1]);
        parameters.Fetch(order[t]);
        if (t + 1 < order.Length) parameters.Prefetch(order[t + 1]);
        return GradReadyMarker.Apply(hidden, () =>
        {
            parameters.Release(order[t]);
            if (t - 1 < firstLayerUnit) return;
            parameters.Fetch(order[t - 1]);
            if (t - 2 >= firstLayerUnit) parameters.Prefetch(order[t - 2]);
        });
    }

    /// <summary>Before the chunk's backward: its last unit, which the backward meets first (still gathered where the chunk's
    /// forward ran last; the marker at its input prefetches the one before it).</summary>
    public void BeforeBackward()
    {
        if (order.Length > firstLayerUnit) parameters.Fetch(order[^1]);
    }

    /// <summary>After a micro-batch's backward of the chunk: nothing stays gathered.</summary>
    public void AfterBackward() => parameters.ReleaseAll();
}
