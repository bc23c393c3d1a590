using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// Context parallelism as Megatron/Transformer Engine run it (ring attention): each layer passes this rank's
/// key/value block around the cp ranks in cp−1 send/recv steps forward, and key/value plus their gradients
/// backward, each step overlapped with the attention block of the previous one. Returns (forward, backward)
/// seconds of transfer per layer and micro-batch, before overlap.
/// </summary>
public static class ContextParallelComm
{
    public static (double Forward, double Backward) Layer(ModelSpec m, RunDescription c, ClusterSpec cluster)
    {
        if (c.ContextParallel <= 1) return (0, 0);
        double kvBytes = KeyValueBytes(m, c);
        bool sameNode = Topology.ContextGroup(c, cluster.GpusPerNode).IntraNode;
        double step = Collectives.SendRecv(kvBytes, sameNode, cluster.Gpu);
        double steps = c.ContextParallel - 1;
        return (steps * step, steps * 2 * step);
    }

    /// <summary>
    /// The exchange as Megatron-Kwai runs it without overlap (--no-context-parallel-comm-overlap-gemm, dattention.py): an
    /// all-gather of every rank's key/value block over the context-parallel group in forward and a reduce-scatter of
    /// their gradients in backward, each on the critical path. Returns (forward, backward) exposed seconds per layer
    /// and micro-batch.
    /// </summary>
    public static (double Forward, double Backward) Exposed(ModelSpec m, RunDescription c, ClusterSpec cluster)
    {
        if (c.ContextParallel <= 1) return (0, 0);
        double gathered = c.ContextParallel * KeyValueBytes(m, c);
        var group = Topology.ContextGroup(c, cluster.GpusPerNode);
        return (Collectives.AllGather(gathered, group, cluster.Gpu), Collectives.ReduceScatter(gathered, group, cluster.Gpu));
    }

    /// <summary>One rank's keys and values of a layer: its s/c tokens x 2 x the key/value groups it holds x head dim.</summary>
    private static double KeyValueBytes(ModelSpec m, RunDescription c) =>
        (double)c.MicroBatch * m.SeqLength / c.ContextParallel * 2.0 * m.NumQueryGroups * m.HeadDim / c.TensorParallel
        * Activations.BytesPerElement(c.Precision);
}
