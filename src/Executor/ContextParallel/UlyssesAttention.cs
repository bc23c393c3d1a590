using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
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
/// (Transformer Engine's reorder_seq_chunks_for_a2a_before_attn and _after_attn).
/// </summary>
public static class UlyssesAttention
{
    /// <summary>q [b, heads, s/cp, d], k and v [b, groups, s/cp, d]; output [b, heads, s/cp, d].</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, ContextParallelism cp, double dropout, DropoutRng? rng)
    {
        using var scope = NewDisposeScope();
        var group = cp.Group;
        long local = q.shape[2];
        // Global position of each token in rank order (rank 0's tokens, then rank 1's, ...), and the order that sorts them.
        var gathered = tensor(Enumerable.Range(0, group.Size).SelectMany(r => ContextParallelism.GlobalPositions(local * group.Size, r, group.Size)).ToArray(), device: q.device);
        var sequenceOrder = gathered.argsort();
        Tensor ToHeads(Tensor x)
        {
            long b = x.shape[0], h = x.shape[1] / group.Size, d = x.shape[3];
            // [b, heads, s/cp, d] -> [cp, b, heads/cp, s/cp, d]: block r of the heads goes to rank r.
            var received = Mappings.AllToAll(x.reshape(b, group.Size, h, local, d).permute(1, 0, 2, 3, 4), group);
            // Block r holds rank r's tokens: [b, heads/cp, s (rank order), d], then in sequence order.
            return received.permute(1, 2, 0, 3, 4).reshape(b, h, group.Size * local, d).index_select(2, sequenceOrder);
        }
        var (heads, keys, values) = (ToHeads(q), ToHeads(k), ToHeads(v));
        var output = dropout > 0 && rng!.NextModelParallel() is { } own ? AttentionWithDropout.Apply(heads, keys, values, dropout, own)
            : ScriptedKernels.CausalAttention(heads, keys, values, dropout);
        long batch = output.shape[0], headsPerRank = output.shape[1], dim = output.shape[3];
        // [b, heads/cp, s, d] in rank order, cut by rank: [cp, b, heads/cp, s/cp, d]; block r goes back to rank r.
        var byRank = output.index_select(2, gathered).view(batch, headsPerRank, group.Size, local, dim).permute(2, 0, 1, 3, 4);
        var back = Mappings.AllToAll(byRank, group);
        // Block r holds this rank's tokens of rank r's heads: [b, heads, s/cp, d].
        return back.permute(1, 0, 2, 3, 4).reshape(batch, group.Size * headsPerRank, local, dim).MoveToOuterDisposeScope();
    }
}
