using Harness.Executor.Distributed;
using Harness.Executor.Optimizer;
using static TorchSharp.torch;

namespace Harness.Executor.DataParallel;

/// <summary>
/// Megatron's distributed optimizer (ZeRO stage 1; optimizer/distrib_optimizer.py): each of the d data-parallel
/// ranks owns the r-th 1/d of every <see cref="GradBucket"/> of the flat buffer (the bucket padded to a multiple of
/// d). The gradients arrive by one reduce-scatter per bucket (<see cref="GradientSync"/>) into this rank's
/// <see cref="GradShard"/>s, averaged; a step clips by the global norm, runs the optimizer's <see cref="IUpdateRule"/> on this
/// rank's float32 master weights and states only (AdamW with fused kernels on a GPU: one <see cref="Fused.FusedKernels.AdamW"/>
/// per bucket's shard, which writes no bf16 weights), and all-gathers the updated weights of every bucket into every rank's
/// model. Adam's master weights and moments take 12/d bytes per parameter instead of 12 (REFERENCE.md: 6 + 12/d with bf16
/// weights and float32 gradients; here 8 + 12/d, as the buffer also keeps one micro-batch's bf16 gradients before folding
/// them into float32), SGD's master weights and momentum 8/d. The buffer then holds no full master copy of its own.
/// The same shards serve ZeRO 2 and 3, so a checkpoint's segments mean the same under every stage: under ZeRO 2 the
/// gradients arrive every micro-batch and add up in the shard (<see cref="GradientSync"/>, everyMicroBatch); under ZeRO 3
/// the buckets are the gather units of <see cref="PartitionedParams"/>, whose partitions the step refreshes from the master
/// weights instead of all-gathering them (the next forward's gathers bring them), and only the vectors are all-gathered.
/// </summary>
public sealed class DistributedOptimizer : IOptimizerState, IDisposable
{
    private readonly ParamAndGradBuffer buffer;
    private readonly ICommunicator dataParallel;
    private readonly GradientNorm norm;
    private readonly IReadOnlyList<GradBucket> buckets;
    private readonly Tensor gradShards;
    private readonly long[] pieceOffsets, stateOffsets;
    private readonly PartitionedParams? partitioned;

    public IUpdateRule Rule { get; }
    public long Step { get; set; }

    /// <summary>The part of each bucket this rank owns, in bucket order: where its state's elements lie in the buffer.</summary>
    public IReadOnlyList<(long Offset, long Length)> Segments { get; }

    public Tensor Master { get; }
    public IReadOnlyList<Tensor> States { get; }

    /// <param name="partitioned">ZeRO 3: where the weights of <paramref name="buckets"/> live (all gathered while this is built).</param>
    public DistributedOptimizer(ParamAndGradBuffer buffer, IReadOnlyList<GradBucket> buckets, ICommunicator dataParallel, IUpdateRule rule, GradientNorm norm,
        PartitionedParams? partitioned = null)
    {
        (this.buffer, this.buckets, this.dataParallel, Rule, this.norm, this.partitioned) = (buffer, buckets, dataParallel, rule, norm, partitioned);
        int d = dataParallel.Size, r = dataParallel.Rank;
        var segments = new List<(long, long)>();
        pieceOffsets = new long[buckets.Count];
        stateOffsets = new long[buckets.Count];
        long pieces = 0, state = 0;
        foreach (var b in buckets)
        {
            long piece = b.PaddedCount(d) / d, start = b.Offset + r * piece;
            long length = Math.Clamp(b.Offset + b.Count - start, 0, piece);
            (pieceOffsets[b.Index], stateOffsets[b.Index]) = (pieces, state);
            segments.Add((Math.Min(start, b.Offset + b.Count), length));
            pieces += piece;
            state += length;
        }
        Segments = segments;
        var device = buffer.Params.device;
        gradShards = zeros(pieces, dtype: buffer.MainGrads.dtype, device: device);
        Master = zeros(state, dtype: ScalarType.Float32, device: device);
        ReloadMaster();
        States = rule.States.Select(_ => zeros(state, dtype: ScalarType.Float32, device: device)).ToList();
    }

    /// <summary>Where bucket <paramref name="bucket"/>'s reduce-scatter leaves this rank's averaged piece of it.</summary>
    public Tensor GradShard(GradBucket bucket) => gradShards.narrow(0, pieceOffsets[bucket.Index], bucket.PaddedCount(dataParallel.Size) / dataParallel.Size);

    /// <summary>Under ZeRO 2 and 3: clears the gradient shards, into which every micro-batch's reduce-scatter adds.</summary>
    public void ZeroGradShards()
    {
        using var _ = no_grad();
        gradShards.zero_();
    }

    /// <summary>Takes this rank's shard of the master weights from the model's weights (at start and after loading; under ZeRO 3
    /// with every unit gathered).</summary>
    public void ReloadMaster()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var b in buckets)
        {
            var (offset, length) = Segments[b.Index];
            var weights = partitioned?.Weights(b) ?? buffer.Params.narrow(0, b.Offset, b.Count);
            Master.narrow(0, stateOffsets[b.Index], length).copy_(weights.narrow(0, offset - b.Offset, length));
        }
    }

    /// <summary>This rank's averaged gradients, bucket by bucket (its pieces without their padding), each with its offset
    /// in the flat buffer: what its step reads, and what a loss scaler unscales.</summary>
    public IReadOnlyList<(Tensor Grads, long Offset)> GradShards() =>
        buckets.Select(b => (gradShards.narrow(0, pieceOffsets[b.Index], Segments[b.Index].Length), Segments[b.Index].Offset)).ToList();

    /// <summary>This rank's gradients as its step reads them (<see cref="GradShards"/> in float32:
    /// <see cref="ParamAndGradBuffer.Float32Grads"/>), made in the caller's dispose scope.</summary>
    public IReadOnlyList<(Tensor Grads, long Offset)> MainGradShards() =>
        GradShards().Select(g => (ParamAndGradBuffer.Float32Grads(g.Grads), g.Offset)).ToList();

    /// <summary>
    /// Once every bucket was reduce-scattered: clip <paramref name="grads"/> (<see cref="MainGradShards"/>, which a loss
    /// scaler unscaled), update this rank's shard, all-gather (unless <paramref name="gatherParams"/> is false:
    /// <see cref="ParamGather"/> does it during the next forward). Returns the global gradient norm (device scalar).
    /// </summary>
    public Tensor ClipAndStep(double lr, IReadOnlyList<(Tensor Grads, long Offset)> grads, bool gatherParams = true)
    {
        Step++;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var total = norm.Compute(grads);
        for (int k = 0; k < buckets.Count; k++)
        {
            var (offset, length) = Segments[k];
            if (length == 0) continue;
            long decayed = Math.Clamp(buffer.DecayedCount - offset, 0, length);
            // No bf16 weights to write here: every rank's come back by the all-gather below.
            long at = stateOffsets[k];
            Rule.ClipAndUpdate(Master.narrow(0, at, length), grads[k].Grads, States.Select(s => s.narrow(0, at, length)).ToList(), null, decayed, total, lr, Step);
        }
        UpdatePartitions();
        if (gatherParams) GatherBuckets();
        return total.MoveToOuterDisposeScope();
    }

    /// <summary>Every rank's weights from the owners' pieces of master weights, in the model's dtype: an all-gather per bucket
    /// (under ZeRO 3, of the vectors; the units' partitions are refreshed and gathered when next used).</summary>
    public void CopyMasterToParams()
    {
        UpdatePartitions();
        GatherBuckets();
    }

    /// <summary>The buckets whose updated weights are all-gathered into every rank after a step: all but ZeRO 3's units.</summary>
    public IReadOnlyList<GradBucket> GatheredBuckets => buckets.Where(b => partitioned?.IsPartitioned(b) != true).ToList();

    /// <summary>ZeRO 3: each unit's partition from this rank's master weights, in the model's dtype.</summary>
    private void UpdatePartitions()
    {
        if (partitioned is null) return;
        using var scope = NewDisposeScope();
        foreach (var b in buckets.Where(partitioned.IsPartitioned))
            partitioned.SetPartition(b, Master.narrow(0, stateOffsets[b.Index], Segments[b.Index].Length));
    }

    private void GatherBuckets()
    {
        foreach (var b in GatheredBuckets)
        {
            var (mine, gathered) = GatherParams(b, ComputeStream.Instance);
            CopyGathered(b, gathered);
            mine.Dispose();
            gathered.Dispose();
        }
    }

    /// <summary>
    /// Enqueues on <paramref name="stream"/> the all-gather of bucket <paramref name="bucket"/>'s updated weights: this
    /// rank's piece of master weights in the model's dtype (made on the compute stream) from every owner. Returns that
    /// piece and the gathered bucket (padded), which the caller keeps until the stream is joined, then disposes.
    /// </summary>
    internal (Tensor Mine, Tensor Gathered) GatherParams(GradBucket bucket, ICommunicationStream stream)
    {
        using var scope = NewDisposeScope(); // for the views; the two results leave it
        using var _ = no_grad();
        int d = dataParallel.Size;
        var (_, length) = Segments[bucket.Index];
        var mine = zeros(bucket.PaddedCount(d) / d, dtype: buffer.Params.dtype, device: buffer.Params.device).DetachFromDisposeScope();
        mine.narrow(0, 0, length).copy_(Master.narrow(0, stateOffsets[bucket.Index], length));
        var gathered = empty(bucket.PaddedCount(d), dtype: buffer.Params.dtype, device: buffer.Params.device).DetachFromDisposeScope();
        stream.WaitForCompute();
        using (stream.Enqueue(dataParallel)) dataParallel.AllGather(mine, gathered);
        return (mine, gathered);
    }

    /// <summary>Bucket <paramref name="bucket"/>'s gathered weights into the model, on the compute stream (after joining the gather's stream).</summary>
    internal void CopyGathered(GradBucket bucket, Tensor gathered)
    {
        using var _ = no_grad();
        using var into = partitioned?.Weights(bucket) ?? buffer.Params.narrow(0, bucket.Offset, bucket.Count);
        using var from = gathered.narrow(0, 0, bucket.Count);
        into.copy_(from);
    }

    public void Dispose()
    {
        gradShards.Dispose();
        Master.Dispose();
        foreach (var s in States) s.Dispose();
    }
}
