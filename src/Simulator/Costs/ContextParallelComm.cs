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
    public static (double Forward, double Backward) Layer(ModelSpec m, ParallelConfig c, ClusterSpec cluster)
    {
        if (c.ContextParallel <= 1) return (0, 0);
        double tokens = (double)c.MicroBatch * m.SeqLength / c.ContextParallel;
        double kvBytes = tokens * 2.0 * m.NumQueryGroups * m.HeadDim / c.TensorParallel * Activations.BytesPerElement(c.Precision);
        bool sameNode = Topology.ContextGroup(c, cluster.GpusPerNode).IntraNode;
        double step = Collectives.SendRecv(kvBytes, sameNode, cluster.Gpu);
        double steps = c.ContextParallel - 1;
        return (steps * step, steps * 2 * step);
    }
}
