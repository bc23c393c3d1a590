using Harness.Executor.Autograd;
using Harness.Executor.Distributed;
using Harness.Executor.Optimizer;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.DataParallel;

/// <summary>
/// Megatron's data-parallel gradient synchronization (DistributedDataParallel's start_grad_sync / finish_grad_sync):
/// each <see cref="GradBucket"/> of the flat buffer goes through <c>beforeReduce</c> (the tensor-parallel and
/// tied-embedding sums of finalize_model_grads, on the compute stream) and one collective over the data-parallel
/// group: an all-reduce that averages it in place, or, under the distributed optimizer, a reduce-scatter into the
/// optimizer's gradient shard. Buckets are launched strictly in order, so every rank makes the same calls in the
/// same order.
/// With overlap (--overlap-grad-reduce), <see cref="Mark"/> puts a <see cref="GradReadyMarker"/> at each layer's input
/// in the last micro-batch's forward; when backward passes it, that layer's gradients are final, and every bucket
/// whose parameters are all final is launched on the communication stream, which first waits for the compute
/// stream. What is only final once backward is over (the embeddings) and everything without overlap is launched by
/// <see cref="Finish"/>, after which the compute stream waits for the communication stream. The calls and their order
/// are the same either way, so overlapping does not change a single bit of the result.
/// Under ZeRO 2 and 3 (<c>everyMicroBatch</c>; DeepSpeed's deepspeed/runtime/zero/stage_1_and_2.py at 38327e0,
/// reduce_independent_p_g_buckets_and_remove_grads and average_tensor) this happens after every micro-batch's backward, not once per step: each bucket's gradients are
/// copied from the parameters' .grad, which autograd allocated, into a reduce bucket of main-gradient type (float32) of the bucket's padded length
/// and freed, the bucket is reduce-scattered and this rank's piece is added into the optimizer's gradient shard, so no
/// gradient of the whole model outlives a micro-batch. With overlap, the markers go into every micro-batch, and at most two
/// reduce buckets exist at once, one filling while the other is reduced (DeepSpeed's double buffer under overlap_comm): a
/// bucket's launch first waits for the one before it.
/// </summary>
public sealed class GradientSync
{
    private readonly ParamAndGradBuffer buffer;
    private readonly IReadOnlyList<GradBucket> buckets;
    private readonly ICommunicator dataParallel;
    private readonly DistributedOptimizer? sharded;
    private readonly Action<GradBucket, Tensor> beforeReduce;
    private readonly ICommunicationStream? stream;
    private readonly bool everyMicroBatch;
    private readonly int[] bucketOf;
    private readonly Dictionary<(int Chunk, int Point), int[]> finalAt;
    private readonly int[] pending;
    private readonly bool[] deferred;
    private readonly List<Tensor> staging = new();
    private readonly Queue<(GradBucket Bucket, Tensor Reduced, Tensor Piece)> reducing = new();
    private int launched;

    /// <param name="finalAfter">Where backward finishes a parameter's gradient, by its name in the buffer: (model chunk,
    /// marker point), or null for parameters final only once backward is over.</param>
    /// <param name="beforeReduce">What finalize_model_grads does to a bucket's float32 gradients (given as a flat tensor over
    /// the bucket) before the data-parallel collective.</param>
    /// <param name="overlapOn">The communication stream to overlap on; null: no overlap.</param>
    /// <param name="everyMicroBatch">ZeRO 2 and 3: reduce-scatter every micro-batch's gradients into <paramref name="sharded"/>'s
    /// shards (the buffer keeps no gradients).</param>
    /// <param name="oncePerStep">Under <paramref name="everyMicroBatch"/>, the buckets whose gradients are summed with another
    /// pipeline stage's in <paramref name="beforeReduce"/> (a tied embedding's two copies): they accumulate over the step's
    /// micro-batches and are reduced once, in <see cref="Finish"/>, as Megatron's finalize_model_grads sums the copies once a
    /// step; a collective between the first and last stage after every micro-batch would wait on sends the pipeline holds back.</param>
    public GradientSync(ParamAndGradBuffer buffer, IReadOnlyList<GradBucket> buckets, ICommunicator dataParallel, DistributedOptimizer? sharded,
        Action<GradBucket, Tensor> beforeReduce, Func<string, (int Chunk, int Point)?> finalAfter, ICommunicationStream? overlapOn,
        bool everyMicroBatch = false, Func<GradBucket, bool>? oncePerStep = null)
    {
        (this.buffer, this.buckets, this.dataParallel, this.sharded, this.beforeReduce, stream) = (buffer, buckets, dataParallel, sharded, beforeReduce, overlapOn);
        if (everyMicroBatch && sharded is null) throw new ArgumentException("ZeRO 2 and 3 reduce-scatter into the distributed optimizer's shards.");
        this.everyMicroBatch = everyMicroBatch;
        bucketOf = buffer.Layout.Select(l => buckets.Single(b => l.Offset >= b.Offset && l.Offset < b.Offset + b.Count).Index).ToArray();
        finalAt = buffer.Layout.Select((l, i) => (Point: finalAfter(l.Name), Index: i)).Where(p => p.Point is not null)
            .GroupBy(p => p.Point!.Value, p => p.Index).ToDictionary(g => g.Key, g => g.ToArray());
        pending = new int[buckets.Count];
        deferred = buckets.Select(b => everyMicroBatch && oncePerStep is not null && oncePerStep(b)).ToArray();
        Reset();
    }

    /// <summary>Whether the forward of a micro-batch (the step's last or not) is to be marked: the last one's, or every one's
    /// under ZeRO 2 and 3.</summary>
    public bool Marks(bool lastMicroBatch) => lastMicroBatch || everyMicroBatch;

    /// <summary>
    /// In a marked micro-batch's forward (<see cref="Marks"/>): <paramref name="hidden"/> through a marker that, in backward,
    /// releases the parameters final at (chunk, point); unchanged without overlap or when nothing is final there.
    /// </summary>
    public Tensor Mark(Tensor hidden, int chunk, int point) =>
        stream is not null && finalAt.TryGetValue((chunk, point), out var parameters)
            ? GradReadyMarker.Apply(hidden, () => Release(parameters))
            : hidden;

    /// <summary>After a micro-batch's backward: fold its bf16 gradients into float32, except in buckets already launched; under
    /// ZeRO 2 and 3, reduce-scatter what is left of it and wait for all of it.</summary>
    public void AfterBackward()
    {
        if (everyMicroBatch) Complete();
        else if (launched == 0) buffer.AccumulateMicroBatch();
        else
            foreach (var b in buckets.Skip(launched)) buffer.AccumulateRange(b.Offset, b.Count);
    }

    /// <summary>Once the pipeline has run: launches the buckets not launched yet and makes compute wait for all of them (under
    /// ZeRO 2 and 3 every micro-batch's backward did, except for the buckets reduced once a step).</summary>
    public void Finish()
    {
        if (!everyMicroBatch) Complete();
        else if (deferred.Any(d => d))
        {
            for (int b = 0; b < buckets.Count; b++)
                if (deferred[b]) Launch(buckets[b], fold: false);
            Join();
        }
    }

    private void Complete()
    {
        while (launched < buckets.Count) LaunchUnlessDeferred(launched++);
        Join();
    }

    /// <summary>Compute waits for the communication stream; the reduced pieces go into the shards and the staging is freed.</summary>
    private void Join()
    {
        stream?.JoinCompute();
        while (reducing.Count > 0) Accumulate();
        foreach (var t in staging) t.Dispose();
        staging.Clear();
        Reset();
    }

    private void Reset()
    {
        launched = 0;
        Array.Clear(pending);
        foreach (int b in bucketOf) pending[b]++;
    }

    /// <summary>A marker was passed in backward: its parameters are final; launch, in order, every bucket that is complete.</summary>
    private void Release(int[] parameters)
    {
        foreach (int p in parameters) pending[bucketOf[p]]--;
        while (launched < buckets.Count && pending[launched] == 0) LaunchUnlessDeferred(launched++, fold: true);
    }

    private void LaunchUnlessDeferred(int bucket, bool fold = false)
    {
        if (!deferred[bucket]) Launch(buckets[bucket], fold);
    }

    /// <param name="fold">Mid-backward: the last micro-batch's bf16 gradients of the bucket are not folded yet.</param>
    private void Launch(GradBucket bucket, bool fold)
    {
        using var scope = NewDisposeScope(); // mid-backward this may run on libtorch's autograd thread, outside any scope
        using var _ = no_grad();
        if (everyMicroBatch)
        {
            LaunchMicroBatch(bucket);
            return;
        }
        if (fold) buffer.AccumulateRange(bucket.Offset, bucket.Count);
        var grads = buffer.MainGrads.narrow(0, bucket.Offset, bucket.Count);
        beforeReduce(bucket, grads);
        Tensor? input = null;
        if (sharded is not null)
        {
            long padded = bucket.PaddedCount(dataParallel.Size);
            // A bucket that does not split evenly goes through a zero-padded copy, kept until the streams join.
            input = padded == bucket.Count ? grads : Padded(grads, padded);
        }
        else if (dataParallel.Size == 1) return;
        stream?.WaitForCompute();
        using (stream?.Enqueue(dataParallel))
        {
            if (input is null) dataParallel.AllReduce(grads, ReduceOp.Avg);
            else dataParallel.ReduceScatter(input, sharded!.GradShard(bucket), ReduceOp.Avg);
        }
    }

    /// <summary>ZeRO 2 and 3: the bucket's gradients out of the parameters into a reduce bucket, reduce-scattered into a piece that
    /// is added into the shard once the collective is done (at once without overlap; with overlap when the next bucket
    /// launches or backward ends).</summary>
    private void LaunchMicroBatch(GradBucket bucket)
    {
        if (stream is not null && reducing.Count > 0)
        {
            stream.JoinCompute();
            Accumulate();
        }
        int d = dataParallel.Size;
        var reduced = zeros(bucket.PaddedCount(d), dtype: buffer.MainGrads.dtype, device: buffer.MainGrads.device).DetachFromDisposeScope();
        foreach (var (_, p, offset) in buffer.Layout.Where(l => l.Offset >= bucket.Offset && l.Offset < bucket.Offset + bucket.Count))
        {
            if (p.grad is not { } grad) continue; // not used by this rank's forward: a zero gradient
            reduced.narrow(0, offset - bucket.Offset, p.numel()).copy_(grad.reshape(-1));
            p.grad = null;
        }
        beforeReduce(bucket, reduced.narrow(0, 0, bucket.Count));
        var piece = empty(bucket.PaddedCount(d) / d, dtype: reduced.dtype, device: reduced.device).DetachFromDisposeScope();
        stream?.WaitForCompute();
        using (stream?.Enqueue(dataParallel)) dataParallel.ReduceScatter(reduced, piece, ReduceOp.Avg);
        reducing.Enqueue((bucket, reduced, piece));
        if (stream is null) Accumulate();
    }

    /// <summary>The oldest reduce-scatter's piece into the shard (compute joined the stream), and its buffers freed.</summary>
    private void Accumulate()
    {
        var (bucket, reduced, piece) = reducing.Dequeue();
        using (no_grad())
        {
            using var shard = sharded!.GradShard(bucket); // held until add_ returns: Finish may run outside any dispose scope
            shard.add_(piece, One);
        }
        reduced.Dispose();
        piece.Dispose();
    }

    private Tensor Padded(Tensor grads, long padded)
    {
        var copy = zeros(padded, dtype: grads.dtype, device: grads.device).DetachFromDisposeScope();
        copy.narrow(0, 0, grads.numel()).copy_(grads);
        staging.Add(copy);
        return copy;
    }
}
