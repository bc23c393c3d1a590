using Harness.Executor.Distributed;
using Harness.Executor.TensorParallel;
using static TorchSharp.torch;

namespace Harness.Executor.ContextParallel;

/// <summary>
/// DeepSpeed-Ulysses (Jacobs et al. 2023, arXiv 2309.14509; Megatron's --cp-comm-type a2a, Transformer Engine's
/// AttnFuncWithCPAndQKVOA2A): queries, keys and values go by all-to-all from this rank's tokens of every head to every
/// token of 1/cp of the heads, attention runs causally over the whole sequence on those heads, and its output goes back
/// by the reverse all-to-all; backward runs the same all-to-alls on the gradients (<see cref="Mappings.AllToAll"/>). Rank r
/// takes the r-th block of the heads and of the key/value groups: heads are numbered group by group, so block r of the
/// heads is exactly the heads of block r of the groups. Each rank holds chunks r and 2cp − 1 − r of the sequence (causal
/// load balancing), so the gathered tokens are reordered by global position before attention and back after it
/// (Transformer Engine's reorder_seq_chunks_for_a2a_before_attn and _after_attn). Under a2a+p2p the all-to-all runs
/// inside a group of consecutive context ranks, whose sorted tokens are the two chunks that group holds as one rank of the
/// ring across the groups (AttnFuncWithCPAndKVP2P).
/// </summary>
public static class UlyssesAttention
{
    /// <summary>q [b, heads, s/cp, d], k and v [b, groups, s/cp, d]; output [b, heads, s/cp, d].</summary>
    /// <param name="group">The ranks that exchange heads: context ranks <paramref name="firstContextRank"/> onwards of
    /// <paramref name="contextSize"/>.</param>
    /// <param name="attend">Attention on the group's tokens, sorted by global position, for 1/group of the heads and groups.</param>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, ICommunicator group, int firstContextRank, int contextSize,
        Func<Tensor, Tensor, Tensor, Tensor> attend)
    {
        using var scope = NewDisposeScope();
        long local = q.shape[2];
        // Global position of each token in member order (the first member's tokens, then the second's, ...), and the
        // order that sorts them.
        var gathered = tensor(Enumerable.Range(firstContextRank, group.Size)
            .SelectMany(r => ContextParallelism.GlobalPositions(local * contextSize, r, contextSize)).ToArray(), device: q.device);
        var sequenceOrder = gathered.argsort();
        var memberOrder = sequenceOrder.argsort(); // where each member-order token sits among the sorted ones
        Tensor ToHeads(Tensor x)
        {
            long b = x.shape[0], h = x.shape[1] / group.Size, d = x.shape[3];
            // [b, heads, s/cp, d] -> [n, b, heads/n, s/cp, d] for the group's n members: block r of the heads goes to member r.
            var received = Mappings.AllToAll(x.reshape(b, group.Size, h, local, d).permute(1, 0, 2, 3, 4), group);
            // Block r holds member r's tokens: [b, heads/n, n·s/cp (member order), d], then sorted by global position.
            return received.permute(1, 2, 0, 3, 4).reshape(b, h, group.Size * local, d).index_select(2, sequenceOrder);
        }
        var (heads, keys, values) = (ToHeads(q), ToHeads(k), ToHeads(v));
        var output = attend(heads, keys, values);
        long batch = output.shape[0], headsPerRank = output.shape[1], dim = output.shape[3];
        // [b, heads/n, n·s/cp, d] in member order, cut by member: [n, b, heads/n, s/cp, d]; block r goes back to member r.
        var byRank = output.index_select(2, memberOrder).view(batch, headsPerRank, group.Size, local, dim).permute(2, 0, 1, 3, 4);
        var back = Mappings.AllToAll(byRank, group);
        // Block r holds this rank's tokens of member r's heads: [b, heads, s/cp, d].
        return back.permute(1, 0, 2, 3, 4).reshape(batch, group.Size * headsPerRank, local, dim).MoveToOuterDisposeScope();
    }
}
