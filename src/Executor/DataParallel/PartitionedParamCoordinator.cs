using Harness.Executor.Autograd;
using static TorchSharp.torch;

namespace Harness.Executor.DataParallel;

/// <summary>
/// When ZeRO 3 gathers and frees each unit's weights (DeepSpeed's deepspeed/runtime/zero/partitioned_param_coordinator.py at
/// 38327e0, fetch_sub_module and release_sub_module, driven by the module hooks of zero/parameter_offload.py): in the forward, a unit is fetched before it runs, the next unit is prefetched on the
/// communication stream so that its all-gather runs beside this unit's compute, and the previous unit is released; in the
/// backward, a marker at each unit's input (<see cref="GradReadyMarker"/>, in place of DeepSpeed's post-backward hook) releases
/// the unit once backward has passed it, fetches the unit before it, whose backward comes next, and prefetches the one before
/// that. The units in forward order are the embeddings (fetched before the embedding), the layer groups (at their first
/// layer's input; a group of full recomputation runs, and is recomputed, as one: DeepSpeed gathers a module for its
/// recomputation too) and the output layer's weights at the final norm's input (the embeddings again when tied), kept from
/// the forward into the backward: the working set of ModelState.ZeroWorkingSet. The embeddings' backward needs no weights,
/// so they are not gathered for it. One model chunk: ZeRO 3 runs without pipeline parallelism.
/// </summary>
public sealed class PartitionedParamCoordinator
{
    private readonly PartitionedParams parameters;
    private readonly GradBucket[] order;
    private readonly Dictionary<int, int> atPoint;

    /// <param name="embedding">The embeddings' unit.</param>
    /// <param name="groups">Each layer group's first layer and unit, in order.</param>
    /// <param name="output">The unit the output layer's weights lie in (the embeddings' when tied).</param>
    /// <param name="layers">Layers of the chunk: the final norm's input is point <paramref name="layers"/>.</param>
    public PartitionedParamCoordinator(PartitionedParams parameters, GradBucket embedding, IReadOnlyList<(int FirstLayer, GradBucket Unit)> groups,
        GradBucket output, int layers)
    {
        this.parameters = parameters;
        order = [embedding, .. groups.Select(g => g.Unit), output];
        atPoint = groups.Select((g, i) => (Point: g.FirstLayer, Index: i + 1)).Append((Point: layers, Index: order.Length - 1)).ToDictionary(p => p.Point, p => p.Index);
    }

    /// <summary>Before the embedding: its weights, and the first group's prefetched.</summary>
    public void BeforeEmbedding()
    {
        parameters.Fetch(order[0]);
        parameters.Prefetch(order[1]);
    }

    /// <summary>At the input of layer <paramref name="layer"/> in the forward (the final norm's at the number of layers): where a
    /// unit starts, the previous one is released, this one fetched and the next prefetched; the marker returned does the
    /// backward's part.</summary>
    public Tensor AtLayerInput(Tensor hidden, int layer)
    {
        if (!atPoint.TryGetValue(layer, out int t)) return hidden;
        if (order[t - 1] != order[t]) parameters.Release(order[t - 1]);
        parameters.Fetch(order[t]);
        if (t + 1 < order.Length) parameters.Prefetch(order[t + 1]);
        return GradReadyMarker.Apply(hidden, () =>
        {
            parameters.Release(order[t]);
            if (t - 1 < 1) return;
            parameters.Fetch(order[t - 1]);
            if (t - 2 >= 1) parameters.Prefetch(order[t - 2]);
        });
    }

    /// <summary>After a micro-batch's backward: nothing stays gathered.</summary>
    public void AfterBackward() => parameters.ReleaseAll();
}
