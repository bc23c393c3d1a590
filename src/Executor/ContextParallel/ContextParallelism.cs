using Harness.Executor.Distributed;
using Harness.Simulator.Specs;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using static TorchSharp.torch;

namespace Harness.Executor.ContextParallel;

/// <summary>
/// Context parallelism (Megatron-core's context_parallel): the sequence is cut into 2·cp chunks and rank c keeps
/// chunks c and 2cp − 1 − c, so under the causal mask every rank has the same attention work (causal load
/// balancing). Positions (rotary or learned) are the tokens' global ones. Attention goes by --cp-comm-type: all_gather
/// all-gathers the keys and values of every rank before grouped-query expansion (reduce-scatter of their gradients in
/// backward) and masks by global position, query i seeing key j when j ≤ i; p2p passes them around a ring; a2a and
/// a2a+p2p exchange heads for tokens. Everything else in a layer is per token and needs no communication.
/// </summary>
public sealed class ContextParallelism : IContextParallel, IDisposable
{
    private readonly ICommunicator cp;
    private readonly ContextParallelCommType comm;
    private readonly ICommunicator? allToAll;
    private readonly ContextParallelism? ring;

    /// <param name="comm">Megatron's --cp-comm-type: all-gathered keys and values (all_gather), <see cref="RingAttention"/>
    /// (p2p), <see cref="UlyssesAttention"/> (a2a), or Ulysses inside groups of <paramref name="allToAllSize"/> consecutive
    /// ranks and the ring across them (a2a+p2p).</param>
    /// <param name="allToAllSize">a2a+p2p: the first of --hierarchical-context-parallel-sizes. The groups are Megatron's
    /// (create_hierarchical_groups, parallel_state.py): consecutive context ranks exchange heads, ranks that far apart form
    /// a ring, ordered by context rank; made here by splitting <paramref name="cp"/>, a collective on every member.</param>
    public ContextParallelism(ICommunicator cp, ContextParallelCommType comm = ContextParallelCommType.AllGather, int allToAllSize = 1)
    {
        (this.cp, this.comm) = (cp, comm);
        if (comm != ContextParallelCommType.A2aP2p) return;
        allToAll = cp.Split(cp.Rank / allToAllSize, cp.Rank, "cp-a2a")!;
        ring = new ContextParallelism(cp.Split(cp.Rank % allToAllSize, cp.Rank, "cp-ring")!, ContextParallelCommType.P2p);
    }

    public ICommunicator Group => cp;

    public void Dispose()
    {
        allToAll?.Dispose();
        ring?.cp.Dispose();
    }

    /// <summary>Global positions of rank <paramref name="rank"/>'s tokens in a sequence of <paramref name="length"/>.</summary>
    public static long[] GlobalPositions(long length, int rank, int size)
    {
        long chunk = length / (2 * size);
        return [.. Range(rank * chunk, chunk), .. Range((2 * size - 1 - rank) * chunk, chunk)];
        static IEnumerable<long> Range(long start, long count) => Enumerable.Range(0, (int)count).Select(i => start + i);
    }

    /// <summary>This rank's global positions when it holds <paramref name="localLength"/> tokens.</summary>
    public Tensor Positions(long localLength, Device device) =>
        tensor(GlobalPositions(localLength * cp.Size, cp.Rank, cp.Size), device: device);

    /// <summary>This rank's tokens of a full-sequence batch [b, s] (or labels).</summary>
    public Tensor Slice(Tensor fullSequence)
    {
        using var scope = NewDisposeScope();
        var index = tensor(GlobalPositions(fullSequence.shape[1], cp.Rank, cp.Size), device: fullSequence.device);
        return fullSequence.index_select(1, index).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// dropout(softmax(QKᵀ/√d + mask))·V over the keys and values of every rank; q [b, heads, s/cp, d], k and v
    /// [b, groups, s/cp, d]: under grouped-query attention only the groups' keys and values travel, heads/groups
    /// times less than expanded ones.
    /// </summary>
    /// <param name="dropout">Attention dropout on the probabilities, drawn from <paramref name="rng"/>'s model-parallel stream.</param>
    public Tensor Attention(Tensor q, Tensor k, Tensor v, double dropout = 0, DropoutRng? rng = null)
    {
        if (comm == ContextParallelCommType.P2p) return RingAttention.Apply(q, k, v, this, dropout, rng);
        // Ulysses' ranks attend causally over the whole sequence; a2a+p2p's hold a ring rank's two chunks after their
        // all-to-all (the sorted positions of their group's tokens), for the ring across the groups.
        if (comm == ContextParallelCommType.A2a)
            return UlyssesAttention.Apply(q, k, v, cp, 0, cp.Size, (h, keys, values) =>
                dropout > 0 && rng!.NextModelParallel() is { } own ? AttentionWithDropout.Apply(h, keys, values, dropout, own)
                : ScriptedKernels.CausalAttention(h, keys, values, dropout));
        if (comm == ContextParallelCommType.A2aP2p)
            return UlyssesAttention.Apply(q, k, v, allToAll!, cp.Rank / allToAll!.Size * allToAll.Size, cp.Size,
                (h, keys, values) => RingAttention.Apply(h, keys, values, ring!, dropout, rng));
        using var scope = NewDisposeScope();
        long local = q.shape[2];
        Tensor Gather(Tensor x) => Mappings.GatherFromSequenceParallelRegion(x.transpose(1, 2).contiguous(), cp).transpose(1, 2);
        var keys = Gather(k);
        var values = Gather(v);
        // Gathered keys come in rank order, each rank's two chunks: their global positions, in the same order.
        var keyPositions = tensor(Enumerable.Range(0, cp.Size).SelectMany(r => GlobalPositions(local * cp.Size, r, cp.Size)).ToArray(), device: q.device);
        var mask = keyPositions.unsqueeze(0).le(Positions(local, q.device).unsqueeze(1)); // [s/cp, s]: true where attended
        var attention = dropout > 0 && rng!.NextModelParallel() is { } own ? AttentionWithDropout.Apply(q, keys, values, dropout, own, mask)
            : ScriptedKernels.MaskedAttention(q, keys, values, mask, dropout);
        return attention.MoveToOuterDisposeScope();
    }
}
