using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// Latency-bandwidth (alpha-beta) model of NCCL's collectives. S is the full (unsharded) message in bytes,
/// B a link's bandwidth per direction, α its per-message latency. Ring on n ranks (REFERENCE.md; Thakur et al.
/// 2005): all-gather and reduce-scatter (n−1)/n·S/B + (n−1)α, all-reduce twice that. Tree (NCCL's double
/// binary tree, each byte up and down the tree): all-reduce 2·S/B with 2·log2(n)·α latency. NCCL picks the faster
/// one, and so do we. Groups spanning nodes run hierarchically: reduce-scatter inside the node, the
/// inter-node collective on each GPU's own NIC over a 1/k shard, all-gather inside the node.
/// </summary>
public static class Collectives
{
    /// <summary>Fraction of NVLink/NVSwitch bandwidth NCCL's ring reaches (nccl-tests bus bandwidth on DGX
    /// A100/H100 without NVLS: ~230 of 300 and ~360 of 450 GB/s).</summary>
    public const double IntraNodeBusEfficiency = 0.8;

    /// <summary>Fraction of InfiniBand/RoCE line rate NCCL reaches across nodes (nccl-tests: ~90%).</summary>
    public const double InterNodeBusEfficiency = 0.9;

    public static double AllGather(double bytes, GroupPlacement g, GpuSpec gpu) =>
        Hierarchical(bytes, g, gpu, allReduce: false);

    public static double ReduceScatter(double bytes, GroupPlacement g, GpuSpec gpu) =>
        Hierarchical(bytes, g, gpu, allReduce: false);

    public static double AllReduce(double bytes, GroupPlacement g, GpuSpec gpu) =>
        Hierarchical(bytes, g, gpu, allReduce: true);

    /// <summary>One send/recv of <paramref name="bytes"/> between two GPUs (pipeline p2p, ring attention step).</summary>
    public static double SendRecv(double bytes, bool sameNode, GpuSpec gpu)
    {
        if (bytes <= 0) return 0;
        var (bw, lat) = Link(gpu, sameNode);
        return bytes / bw + lat;
    }

    /// <summary>All-to-all: each rank keeps 1/n and sends (n−1)/n of its <paramref name="bytes"/>.</summary>
    public static double AllToAll(double bytes, GroupPlacement g, GpuSpec gpu)
    {
        if (g.Size <= 1 || bytes <= 0) return 0;
        double n = g.Size;
        // Intra-node traffic (share (k−1)/n) and inter-node traffic (share (n−k)/n) go out on different links.
        var (bwIn, latIn) = Link(gpu, true);
        var (bwOut, latOut) = Link(gpu, false);
        double k = g.PerNode;
        return Math.Max((k - 1) / n * bytes / bwIn + (k - 1) * latIn,
                        (n - k) / n * bytes / bwOut + (n - k) * latOut);
    }

    private static double Hierarchical(double bytes, GroupPlacement g, GpuSpec gpu, bool allReduce)
    {
        if (g.Size <= 1 || bytes <= 0) return 0;
        if (g.IntraNode) return Flat(bytes, g.Size, Link(gpu, true), allReduce);
        if (g.PerNode == 1) return Flat(bytes, g.Size, Link(gpu, false), allReduce);
        // Inside a node: reduce-scatter (and all-gather back for all-reduce) over k GPUs; across nodes: each GPU
        // runs the collective on its 1/k shard over its own NIC.
        var inside = Link(gpu, true);
        double intra = Flat(bytes, g.PerNode, inside, allReduce: false);
        double inter = Flat(bytes / g.PerNode, g.Nodes, Link(gpu, false), allReduce);
        double hierarchical = (allReduce ? 2 : 1) * intra + inter;
        double flat = Flat(bytes, g.Size, Link(gpu, false), allReduce); // one ring through every node's NIC
        return Math.Min(hierarchical, flat);
    }

    /// <summary>Ring (or, for all-reduce, the faster of ring and tree) on n ranks over one kind of link.</summary>
    private static double Flat(double bytes, int n, (double Bandwidth, double Latency) link, bool allReduce)
    {
        if (n <= 1) return 0;
        double steps = n - 1;
        double ring = steps / n * bytes / link.Bandwidth + steps * link.Latency;
        if (!allReduce) return ring;
        double tree = 2 * bytes / link.Bandwidth + 2 * Math.Ceiling(Math.Log2(n)) * link.Latency;
        return Math.Min(2 * ring, tree);
    }

    private static (double Bandwidth, double Latency) Link(GpuSpec gpu, bool sameNode) => sameNode
        ? (gpu.IntraNode.BandwidthBytesPerSecond * IntraNodeBusEfficiency, gpu.IntraNode.LatencySeconds)
        : (gpu.InterNode.BandwidthBytesPerSecond * InterNodeBusEfficiency, gpu.InterNode.LatencySeconds);
}
