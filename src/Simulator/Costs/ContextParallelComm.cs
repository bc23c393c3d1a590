using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// Context parallelism's exchange per layer, by --cp-comm-type: the ring (<see cref="Layer"/>), the all-gather
/// (<see cref="Exposed"/>), Ulysses' all-to-alls (<see cref="AllToAll"/>), or under a2a+p2p the all-to-alls inside each
/// group of the first hierarchical level and the ring across them.
/// </summary>
public static class ContextParallelComm
{
    /// <summary>
    /// Ring attention (p2p; the ring level of a2a+p2p): each layer passes this rank's key/value block around the ring's r
    /// ranks in r − 1 send/recv steps forward, and key/value plus their gradients backward, each step overlapped with the
    /// attention block of the previous one. Under a2a+p2p a ring rank holds s/r tokens of 1/(c/r) of the groups: as many
    /// bytes as s/c tokens of all of them. Returns (forward, backward) seconds of transfer per layer and micro-batch,
    /// before overlap.
    /// </summary>
    public static (double Forward, double Backward) Layer(ModelSpec m, RunDescription c, ClusterSpec cluster)
    {
        int ring = c.ContextParallelLevels.Ring;
        if (ring <= 1) return (0, 0);
        double kvBytes = KeyValueBytes(m, c);
        bool sameNode = Topology.ContextRingGroup(c, cluster.GpusPerNode).IntraNode;
        double step = Collectives.SendRecv(kvBytes, sameNode, cluster.Gpu);
        double steps = ring - 1;
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

    /// <summary>
    /// DeepSpeed-Ulysses as Transformer Engine runs it (--cp-comm-type a2a; AttnFuncWithCPAndQKVOA2A and
    /// flash_attn_a2a_communicate in transformer_engine/pytorch/attention/dot_product_attention/context_parallel.py at
    /// d0067d0): forward all-to-alls Q, K and V from this rank's s/c tokens of every head to all s tokens of 1/c of the
    /// heads, one all_to_all_single each, and the attention output back; backward all-to-alls the output's gradient and
    /// then the gradients of Q, K and V the same ways. Attention waits for its inputs, so all four are on the critical
    /// path. Each all-to-all moves one rank's tensor of s/c tokens: Q and O a/t heads wide, K and V g/t groups. Under
    /// a2a+p2p the same four run inside each all-to-all group (AttnFuncWithCPAndKVP2P: Q, K, V before the ring, O after
    /// it). Returns (forward, backward) exposed seconds per layer and micro-batch.
    /// </summary>
    public static (double Forward, double Backward) AllToAll(ModelSpec m, RunDescription c, ClusterSpec cluster)
    {
        if (c.ContextParallelLevels.AllToAll <= 1) return (0, 0);
        var group = Topology.ContextAllToAllGroup(c, cluster.GpusPerNode);
        double heads = Collectives.AllToAll(TokenBytes(m, c) * m.NumAttentionHeads * m.HeadDim / c.TensorParallel, group, cluster.Gpu);
        double groups = Collectives.AllToAll(TokenBytes(m, c) * m.NumQueryGroups * m.HeadDim / c.TensorParallel, group, cluster.Gpu);
        double fourCalls = 2 * heads + 2 * groups; // Q and O (dO and dQ), K and V (dK and dV)
        return (fourCalls, fourCalls);
    }

    /// <summary>One rank's keys and values of a layer: its s/c tokens x 2 x the key/value groups it holds x head dim.</summary>
    private static double KeyValueBytes(ModelSpec m, RunDescription c) =>
        TokenBytes(m, c) * 2.0 * m.NumQueryGroups * m.HeadDim / c.TensorParallel;

    /// <summary>Bytes of one element per token of this rank's s/c tokens of a micro-batch.</summary>
    private static double TokenBytes(ModelSpec m, RunDescription c) =>
        (double)c.MicroBatch * m.SeqLength / c.ContextParallel * Activations.BytesPerElement(c.Precision);
}
