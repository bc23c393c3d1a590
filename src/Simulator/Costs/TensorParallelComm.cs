using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>Seconds of tensor-parallel communication per layer and micro-batch.</summary>
/// <param name="Forward">Collectives of the forward pass (blocking unless TP communication is overlapped).</param>
/// <param name="ForwardReduceScatter">The part of <see cref="Forward"/> that reduce-scatters the row-parallel GEMMs'
/// outputs (sequence parallelism only).</param>
/// <param name="BackwardBlocking">Backward collectives the next GEMM waits for.</param>
/// <param name="BackwardAsync">Backward collectives Megatron issues asynchronously, overlapped with the
/// weight-gradient GEMMs (column-parallel input gradients).</param>
public readonly record struct TensorParallelTime(double Forward, double BackwardBlocking, double BackwardAsync,
    double ForwardReduceScatter = 0);

/// <summary>
/// Megatron tensor parallelism (Shoeybi et al. 2019; Korthikanti et al. 2022). Per layer, with S = b·s·h
/// activation bytes: without sequence parallelism the g operator all-reduces the two row-parallel outputs
/// forward and the f operator all-reduces the two column-parallel input gradients backward (async, behind the
/// weight-gradient GEMMs). With sequence parallelism each all-reduce becomes an all-gather plus a
/// reduce-scatter of the same total volume; backward, the row-parallel side all-gathers the gradient
/// (blocking) and the column-parallel side reduce-scatters the input gradient and re-gathers the saved input
/// shard (async). CAAT-Net partial synchronization (sync factor p &lt; 1, arXiv 2506.19645) all-reduces only the
/// first p·h channels after the row-parallel linears, forward and (in fp32) backward, and drops the f
/// operator's backward all-reduce; it adds one full all-reduce before the first layer (first stage).
/// </summary>
public static class TensorParallelComm
{
    /// <summary>Full activation message of one micro-batch on one context rank, S = b·(s/cp)·h·bytes.</summary>
    public static double ActivationMessageBytes(ModelSpec m, RunDescription c) =>
        (double)c.MicroBatch * m.SeqLength / c.ContextParallel * m.HiddenSize * Activations.BytesPerElement(c.Precision);

    /// <summary>Bytes this layer's TP collectives carry (message sizes, forward plus backward), for one micro-batch.</summary>
    public static double BytesPerLayer(ModelSpec m, RunDescription c)
    {
        if (c.TensorParallel <= 1) return 0;
        double S = ActivationMessageBytes(m, c);
        if (c.SyncFactor < 1)
            return 2 * c.SyncFactor * S + 2 * c.SyncFactor * S * PartialBackwardWidening(c);
        return c.SequenceParallel
            ? 4 * S + 6 * S     // forward 2 AG + 2 RS; backward 2 AG (row) + 2 RS + 2 AG (column)
            : 2 * S + 2 * S;    // forward 2 AR; backward 2 AR
    }

    public static TensorParallelTime Layer(ModelSpec m, RunDescription c, ClusterSpec cluster)
    {
        if (c.TensorParallel <= 1) return default;
        var g = Topology.TensorGroup(c, cluster.GpusPerNode);
        var gpu = cluster.Gpu;
        double S = ActivationMessageBytes(m, c);
        if (c.SyncFactor < 1)
        {
            double partial = c.SyncFactor * S;
            return new TensorParallelTime(
                2 * Collectives.AllReduce(partial, g, gpu),
                2 * Collectives.AllReduce(partial * PartialBackwardWidening(c), g, gpu),
                0);
        }
        if (c.SequenceParallel)
        {
            double ag = Collectives.AllGather(S, g, gpu), rs = Collectives.ReduceScatter(S, g, gpu);
            return new TensorParallelTime(2 * (ag + rs), 2 * ag, 2 * (rs + ag), 2 * rs);
        }
        double ar = Collectives.AllReduce(S, g, gpu);
        return new TensorParallelTime(2 * ar, 0, 2 * ar);
    }

    /// <summary>CAAT-Net's extra full all-reduce before the first layer, on the first stage, per micro-batch.</summary>
    public static double PartialSyncEntry(ModelSpec m, RunDescription c, ClusterSpec cluster) =>
        c.SyncFactor < 1 && c.TensorParallel > 1
            ? Collectives.AllReduce(ActivationMessageBytes(m, c), Topology.TensorGroup(c, cluster.GpusPerNode), cluster.Gpu)
            : 0;

    /// <summary>The CAAT-Net fork all-reduces the partial gradient in fp32: 4 B instead of the activation's 2.</summary>
    private static double PartialBackwardWidening(RunDescription c) => 4 / Activations.BytesPerElement(c.Precision);
}
