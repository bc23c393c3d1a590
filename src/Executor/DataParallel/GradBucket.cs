using Harness.Executor.Optimizer;

namespace Harness.Executor.DataParallel;

/// <summary>
/// A contiguous range of the flat gradient buffer that one data-parallel collective reduces (Megatron's
/// _ParamAndGradBucket). Under the distributed optimizer each of the d ranks owns the r-th 1/d of every bucket,
/// the bucket padded to a multiple of d (<see cref="PaddedCount"/>), so one reduce-scatter per bucket suffices.
/// </summary>
public sealed record GradBucket(int Index, long Offset, long Count)
{
    /// <summary>The bucket's length rounded up to a multiple of <paramref name="ranks"/>.</summary>
    public long PaddedCount(int ranks) => (Count + ranks - 1) / ranks * ranks;

    /// <summary>
    /// Megatron's bucketing (param_and_grad_buffer.py) over this buffer's order: the weight matrices, which come first
    /// in module order, are walked from their end, where the last layers and the output layer lie, and cut at
    /// parameter boundaries once a bucket holds <paramref name="bucketSize"/> elements (DataParallelComm.BucketSize: --ddp-bucket-size or Megatron's default), so buckets come in the order
    /// backward finishes their gradients; the vectors (norms and biases, the rest of the buffer, a small fraction
    /// of it) form the last bucket.
    /// </summary>
    public static IReadOnlyList<GradBucket> Of(ParamAndGradBuffer buffer, long bucketSize)
    {
        if (bucketSize < 1) throw new ArgumentException($"--ddp-bucket-size is {bucketSize}; it must be at least 1.");
        var buckets = new List<GradBucket>();
        long end = buffer.DecayedCount;
        foreach (var (_, _, offset) in buffer.Layout.Where(l => l.Offset < buffer.DecayedCount).Reverse())
            if (end - offset >= bucketSize || offset == 0)
            {
                buckets.Add(new GradBucket(buckets.Count, offset, end - offset));
                end = offset;
            }
        return WithVectors(buffer, buckets);
    }

    /// <summary>
    /// ZeRO 3's buckets: one per gather unit (<paramref name="unitOf"/> names a weight matrix's unit: a layer, the embeddings, the
    /// output layer), so that the weights one all-gather brings, the gradients one reduce-scatter sends and the optimizer's
    /// shard of them are the same range, walked from the output end as <see cref="Of"/> walks; the vectors (norms and biases)
    /// form the last bucket, as there, and stay whole on every rank (<see cref="PartitionedParams"/>).
    /// </summary>
    public static IReadOnlyList<GradBucket> OfUnits(ParamAndGradBuffer buffer, Func<string, string> unitOf)
    {
        var buckets = new List<GradBucket>();
        var matrices = buffer.Layout.Where(l => l.Offset < buffer.DecayedCount).ToList();
        long end = buffer.DecayedCount;
        for (int i = matrices.Count - 1; i >= 0; i--)
            if (i == 0 || unitOf(matrices[i - 1].Name) != unitOf(matrices[i].Name))
            {
                buckets.Add(new GradBucket(buckets.Count, matrices[i].Offset, end - matrices[i].Offset));
                end = matrices[i].Offset;
            }
        return WithVectors(buffer, buckets);
    }

    private static IReadOnlyList<GradBucket> WithVectors(ParamAndGradBuffer buffer, List<GradBucket> buckets)
    {
        if (buffer.Count > buffer.DecayedCount) buckets.Add(new GradBucket(buckets.Count, buffer.DecayedCount, buffer.Count - buffer.DecayedCount));
        return buckets;
    }
}
