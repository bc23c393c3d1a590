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
        if (buffer.Count > buffer.DecayedCount) buckets.Add(new GradBucket(buckets.Count, buffer.DecayedCount, buffer.Count - buffer.DecayedCount));
        return buckets;
    }
}
