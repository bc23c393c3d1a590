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
/// Megatron-LM's rank order (<see cref="RankOrder"/>: tensor fastest, then context, data, pipeline): a group whose
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

    public static GroupPlacement TensorGroup(RunDescription c, int gpusPerNode) =>
        Place(c.TensorParallel, RankOrder.Of(c).Stride(ParallelDims.Tensor), gpusPerNode);

    public static GroupPlacement ContextGroup(RunDescription c, int gpusPerNode) =>
        Place(c.ContextParallel, RankOrder.Of(c).Stride(ParallelDims.Context), gpusPerNode);

    /// <summary>The context-parallel ranks that exchange heads by all-to-all: consecutive context ranks (Megatron's first
    /// level of create_hierarchical_groups, parallel_state.py); the whole context group under --cp-comm-type a2a.</summary>
    public static GroupPlacement ContextAllToAllGroup(RunDescription c, int gpusPerNode) =>
        Place(c.ContextParallelLevels.AllToAll, RankOrder.Of(c).Stride(ParallelDims.Context), gpusPerNode);

    /// <summary>The context-parallel ranks of one ring: the whole context group, or under a2a+p2p every all-to-all group's
    /// rank of the same index (Megatron's second level, all-to-all size context ranks apart).</summary>
    public static GroupPlacement ContextRingGroup(RunDescription c, int gpusPerNode) =>
        Place(c.ContextParallelLevels.Ring, RankOrder.Of(c).Stride(ParallelDims.Context) * c.ContextParallelLevels.AllToAll, gpusPerNode);

    /// <summary>
    /// The group gradients are reduced over: data- and context-parallel ranks hold the same weights, t ranks apart in
    /// each stage's block of t·c·d consecutive ranks. Where that block does not tile the nodes (t2 d3: 6 ranks on 8-GPU
    /// nodes; t2 c2 d9: 36), stages' blocks straddle node boundaries and their groups have members on nodes unevenly
    /// (4 + 2, or 4 on most nodes and 2 on the edge ones). NCCL's rings leave each node through a different NIC per
    /// channel, one NIC per member, so such a group reduces at the pace of the node with the fewest members: it is placed
    /// as that many per node. Every stage waits for the slowest group before the optimizer step (its gradient norm is global).
    /// </summary>
    public static GroupPlacement DataWithContextGroup(RunDescription c, int gpusPerNode)
    {
        // Context ranks come first, then data ranks, so the group's members are the context stride apart throughout.
        int size = c.DataParallel * c.ContextParallel, stride = RankOrder.Of(c).Stride(ParallelDims.Context);
        if (size <= 1) return new GroupPlacement(1, 1);
        if (stride >= gpusPerNode) return new GroupPlacement(size, 1);
        int block = StageBlock(c), fewest = size;
        // Stage s's block starts s·block ranks in; the offsets within a node repeat after gpusPerNode stages.
        for (int s = 0; s < Math.Min(c.PipelineParallel, gpusPerNode); s++)
            fewest = Math.Min(fewest, FewestMembersOnANode(s * block % gpusPerNode, stride, size, gpusPerNode));
        return new GroupPlacement(size, fewest);
    }

    /// <summary>Members on the node that holds the fewest of a group of <paramref name="size"/> ranks
    /// <paramref name="stride"/> apart whose first member is <paramref name="offset"/> ranks into a node (in closed form
    /// where the stride tiles the node, as the search evaluates this for every configuration; else member by member).</summary>
    private static int FewestMembersOnANode(int offset, int stride, int size, int gpusPerNode)
    {
        if (gpusPerNode % stride == 0 && offset % stride == 0)
        {
            // Members fill the rest of the first node, then whole nodes of gpusPerNode/stride, then a last part.
            int perNode = gpusPerNode / stride, first = Math.Min(size, (gpusPerNode - offset) / stride), rest = size - first;
            int least = first;
            if (rest >= perNode) least = Math.Min(least, perNode);
            if (rest % perNode > 0) least = Math.Min(least, rest % perNode);
            return least;
        }
        int fewest = size, node = -1, count = 0;
        for (int i = 0; i < size; i++)
        {
            int n = (offset + i * stride) / gpusPerNode;
            if (n != node && count > 0) { fewest = Math.Min(fewest, count); count = 0; }
            node = n;
            count++;
        }
        return Math.Min(fewest, count);
    }

    /// <summary>Adjacent pipeline stages are tensor·context·data ranks apart, so every pair of neighbours shares a node only
    /// when the whole pipeline does. Otherwise some pairs talk across the network (with 4-rank stages on 8-GPU nodes,
    /// every second boundary, and the interleaved schedule's wrap from the last stage to the first), and the pipeline
    /// runs at the pace of its slowest link: every micro-batch crosses every boundary, and in Megatron's exchanges
    /// (send_forward_recv_forward and the rest) a rank waits for its transfers on both sides.</summary>
    public static bool PipelineNeighboursShareNode(RunDescription c, int gpusPerNode) =>
        StageBlock(c) * c.PipelineParallel <= gpusPerNode;

    private static int StageBlock(RunDescription c) => RankOrder.Of(c).Stride(ParallelDims.Pipeline);
}
