using Harness.Executor.Distributed;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using static TorchSharp.torch;

namespace Harness.Executor.DataParallel;

/// <summary>
/// What Megatron's finalize_model_grads (distributed/finalize_model_grads.py) does between the last backward of
/// an iteration and the optimizer, on the float32 gradients of one <see cref="GradBucket"/> of a
/// <see cref="ParamAndGradBuffer"/> (<c>grads</c>: a flat tensor over the bucket's range: its main gradients, or under ZeRO 2
/// and 3 a micro-batch's reduce bucket), before the bucket's data-parallel reduction (<see cref="GradientSync"/>). The sums
/// are linear, so making them per micro-batch gives the sum of the accumulated gradients.
/// </summary>
public static class FinalizeModelGrads
{
    /// <summary>
    /// Sums over the tensor-parallel group the gradients of replicated parameters in <paramref name="bucket"/> that each
    /// rank saw only part of: under sequence parallelism (its sequence block; Megatron's _allreduce_layernorm_grads)
    /// and under CAAT-Net partial sync (its own partial sums: "norm weights stay replicated, their gradients are
    /// all-reduced").
    /// </summary>
    public static void AllReduceReplicatedGrads(ShardedTensorParallel tp, ParamAndGradBuffer buffer, GradBucket bucket, Tensor grads) =>
        AllReduceCoalesced(bucket, grads, InBucket(buffer, bucket).Where(l => tp.NeedsGradAllReduce(l.Name, l.Parameter)).ToList(), tp.Group);

    /// <summary>
    /// Sums the word-embedding gradients of the first and last pipeline stage, which both hold the tied table
    /// (Megatron's _allreduce_word_embedding_grads), when the table is in <paramref name="bucket"/>; null group: no
    /// tied table across stages.
    /// </summary>
    public static void AllReduceEmbeddingGrads(ICommunicator? embedding, ParamAndGradBuffer buffer, GradBucket bucket, Tensor grads)
    {
        if (embedding is null) return;
        AllReduceCoalesced(bucket, grads, InBucket(buffer, bucket).Where(l => l.Name.EndsWith("word_embeddings")).ToList(), embedding);
    }

    private static IEnumerable<(string Name, TorchSharp.Modules.Parameter Parameter, long Offset)> InBucket(ParamAndGradBuffer buffer, GradBucket bucket) =>
        buffer.Layout.Where(l => l.Offset >= bucket.Offset && l.Offset < bucket.Offset + bucket.Count);

    /// <summary>Sums the gradients of <paramref name="parameters"/> in <paramref name="grads"/> over <paramref name="group"/> through one flat buffer.</summary>
    private static void AllReduceCoalesced(GradBucket bucket, Tensor grads, IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Parameter, long Offset)> parameters, ICommunicator group)
    {
        if (parameters.Count == 0 || group.Size == 1) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var slices = parameters.Select(p => grads.narrow(0, p.Offset - bucket.Offset, p.Parameter.numel())).ToList();
        var flat = cat(slices);
        group.AllReduce(flat);
        long offset = 0;
        foreach (var slice in slices)
        {
            slice.copy_(flat.narrow(0, offset, slice.numel()));
            offset += slice.numel();
        }
    }
}
