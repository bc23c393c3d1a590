using Harness.Executor.Distributed;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.DataParallel;

/// <summary>
/// The global gradient norm for clipping when the model is spread over ranks (Megatron's
/// get_grad_norm_fp32): each rank sums the squares of the gradients it owns, counting a replicated tensor once
/// (tensor-parallel rank 0 counts the replicated norms and biases, the first stage the tied word embedding that
/// the last stage also holds), and the sums are added over the model-parallel group (and, when gradients are
/// sharded by the distributed optimizer, over the data-parallel group too). The same group, Megatron's
/// get_grad_stats_parallel_group, agrees on whether any gradient overflowed (<see cref="FoundInf"/>).
/// </summary>
public sealed class GradientNorm(IReadOnlyList<(long Offset, long Count)> excluded, IReadOnlyList<ICommunicator> sumOver)
{
    /// <summary>What rank (tp rank, pipeline position) does not count, by the roles of its parameters.</summary>
    public static IReadOnlyList<(long Offset, long Count)> Duplicates(ParamAndGradBuffer buffer, ITensorParallel tp, int tensorRank, bool holdsEmbeddingCopy) =>
        buffer.Layout.Where(l =>
                (tensorRank > 0 && !(tp is ShardedTensorParallel s && s.IsShard(l.Parameter))) ||
                (holdsEmbeddingCopy && l.Name.EndsWith("word_embeddings")))
            .Select(l => (l.Offset, l.Parameter.numel())).ToList();

    /// <summary>‖g‖ over every rank, for the gradients <paramref name="grads"/> of the whole buffer.</summary>
    public Tensor Compute(Tensor grads) => Compute([(grads, 0)]);

    /// <summary>‖g‖ over every rank, for this rank's gradients in pieces, each starting at its offset of the buffer.</summary>
    public Tensor Compute(IReadOnlyList<(Tensor Grads, long Offset)> parts)
    {
        using var scope = NewDisposeScope();
        var squares = zeros(1, dtype: ScalarType.Float32, device: parts[0].Grads.device);
        foreach (var (part, offset) in parts)
        {
            // In float32, as get_grad_norm_fp32's multi_tensor_l2norm squares 16-bit gradients (the precision-aware optimizer's).
            var grads = part.to(ScalarType.Float32);
            squares.add_(grads.Squared().sum(type: ScalarType.Float32), One);
            foreach (var (start, count) in excluded)
            {
                long lo = Math.Max(start, offset), hi = Math.Min(start + count, offset + grads.numel());
                if (hi > lo) squares.sub_(grads.narrow(0, lo - offset, hi - lo).Squared().sum(type: ScalarType.Float32));
            }
        }
        foreach (var group in sumOver)
            if (group.Size > 1) group.AllReduce(squares);
        return squares.sqrt().reshape([]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Whether any rank's gradients hold an inf or a NaN, from this rank's flag (<see cref="MainGradUnscale"/>): an all-reduce
    /// MAX over the group the norm sums over, then one read on the host (Megatron's _unscale_main_grads_and_check_for_nan).
    /// Data-parallel replicas of the replicated optimizer hold the same averaged gradients, so the model-parallel group
    /// suffices there; the distributed optimizer's shards differ, so its group spans the data-parallel ranks too.
    /// </summary>
    public bool FoundInf(Tensor flag)
    {
        foreach (var group in sumOver)
            if (group.Size > 1) group.AllReduce(flag, ReduceOp.Max);
        using var host = flag.cpu();
        return host.item<float>() > 0;
    }
}
