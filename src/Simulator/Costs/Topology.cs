using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// Where the members of one process group sit: <see cref="Size"/> ranks, <see cref="PerNode"/> of them in
/// each node. PerNode = Size: the group talks over NVLink/NVSwitch only; PerNode = 1: every hop crosses the
/// network; in between, hierarchical (inside each node, then across nodes).
/// </summary>
public readonly record struct GroupPlacement(int Size, int PerNode)
{
    public int Nodes => Size / PerNode;
    public bool IntraNode => PerNode >= Size;
}

/// <summary>
/// Megatron-LM's rank order (parallel_state: tensor fastest, then context, data, pipeline): a group whose
/// consecutive members are <c>stride</c> ranks apart shares a node with as many members as fit in a node.
/// </summary>
public static class Topology
{
    /// <summary>Placement of a group of <paramref name="size"/> ranks, <paramref name="stride"/> global ranks apart.</summary>
    public static GroupPlacement Place(int size, int stride, int gpusPerNode)
    {
        if (size <= 1) return new GroupPlacement(1, 1);
        int perNode = stride >= gpusPerNode ? 1 : Math.Min(size, Math.Max(1, gpusPerNode / stride));
        // A group must split evenly over nodes for the hierarchical algorithm; otherwise treat it as flat inter-node.
        if (size % perNode != 0) perNode = 1;
        return new GroupPlacement(size, perNode);
    }

    public static GroupPlacement TensorGroup(ParallelConfig c, int gpusPerNode) =>
        Place(c.TensorParallel, 1, gpusPerNode);

    public static GroupPlacement ContextGroup(ParallelConfig c, int gpusPerNode) =>
        Place(c.ContextParallel, c.TensorParallel, gpusPerNode);

    /// <summary>
    /// The group gradients are reduced over: data- and context-parallel ranks hold the same weights. When a stage's
    /// tensor·context·data block of consecutive ranks is smaller than a node and does not divide it (t2 d3: 6 ranks on
    /// 8-GPU nodes), some stages' blocks straddle two nodes and so do their groups: those stages reduce across the
    /// network, and every stage waits for the slowest before the optimizer step (its gradient norm is global).
    /// </summary>
    public static GroupPlacement DataWithContextGroup(ParallelConfig c, int gpusPerNode) =>
        StageBlockStraddlesNodes(c, gpusPerNode)
            ? new GroupPlacement(c.DataParallel * c.ContextParallel, 1)
            : Place(c.DataParallel * c.ContextParallel, c.TensorParallel, gpusPerNode);

    /// <summary>Adjacent pipeline stages are tensor·context·data ranks apart, so every pair of neighbours shares a node only
    /// when the whole pipeline does. Otherwise some pairs talk across the network (with 4-rank stages on 8-GPU nodes,
    /// every second boundary, and the interleaved schedule's wrap from the last stage to the first), and the pipeline
    /// runs at the pace of its slowest link: every micro-batch crosses every boundary, and in Megatron's exchanges
    /// (send_forward_recv_forward and the rest) a rank waits for its transfers on both sides.</summary>
    public static bool PipelineNeighboursShareNode(ParallelConfig c, int gpusPerNode) =>
        StageBlock(c) * c.PipelineParallel <= gpusPerNode;

    private static int StageBlock(ParallelConfig c) => c.TensorParallel * c.ContextParallel * c.DataParallel;

    private static bool StageBlockStraddlesNodes(ParallelConfig c, int gpusPerNode) =>
        StageBlock(c) < gpusPerNode && gpusPerNode % StageBlock(c) != 0;
}
