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
/// Under Megatron's --use-precision-aware-optimizer (which Megatron runs with the distributed optimizer only) the master
/// weights and moments are stored as Transformer Engine's FusedAdam stores them (<see cref="PrecisionAwareStates"/>, one
/// scaled tensor per parameter's piece of the shard), the step reads the main gradients in their own dtype, unscaled and
/// clipped in place (distrib_optimizer.py sets shard_main_param.decoupled_grad = the main gradients' shard, no float32 copy),
/// and the update writes this rank's piece of the model's 16-bit weights itself, which the all-gather then spreads.
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
    private readonly PrecisionAwareStates? aware;

    public IUpdateRule Rule { get; }
    public long Step { get; set; }

    /// <summary>The part of each bucket this rank owns, in bucket order: where its state's elements lie in the buffer.</summary>
    public IReadOnlyList<(long Offset, long Length)> Segments { get; }

    public Tensor Master { get; }
    public IReadOnlyList<Tensor> States { get; }

    /// <param name="partitioned">ZeRO 3: where the weights of <paramref name="buckets"/> live (all gathered while this is built).</param>
    /// <param name="precisionAware">The precision-aware optimizer's state dtypes (Adam only); null: float32 master weights and states.</param>
    public DistributedOptimizer(ParamAndGradBuffer buffer, IReadOnlyList<GradBucket> buckets, ICommunicator dataParallel, IUpdateRule rule, GradientNorm norm,
        PartitionedParams? partitioned = null, Simulator.Specs.AdamStates? precisionAware = null)
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
        if (precisionAware is not null)
        {
            aware = new PrecisionAwareStates(precisionAware, buffer.Params.dtype, ParameterPieces(buffer, buckets), device);
            (Master, States) = (aware.Master, aware.Moments);
        }
        else
        {
            Master = zeros(state, dtype: ScalarType.Float32, device: device);
            States = rule.States.Select(_ => zeros(state, dtype: ScalarType.Float32, device: device)).ToList();
        }
        ReloadMaster();
    }

    /// <summary>The tensors FusedAdam would see under the distributed optimizer: each parameter's part of this rank's segment
    /// of every bucket, as ranges of the state vector, in order.</summary>
    private List<(long Start, long Length)> ParameterPieces(ParamAndGradBuffer buffer, IReadOnlyList<GradBucket> buckets)
    {
        var pieces = new List<(long, long)>();
        foreach (var b in buckets)
        {
            var (offset, length) = Segments[b.Index];
            foreach (var (_, p, at) in buffer.Layout)
            {
                long lo = Math.Max(offset, at), hi = Math.Min(offset + length, at + p.numel());
                if (hi > lo) pieces.Add((stateOffsets[b.Index] + lo - offset, hi - lo));
            }
        }
        return pieces;
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
    /// with every unit gathered). Precision-aware, the weights are also this rank's piece of the model's weights the update
    /// reads and writes (under ZeRO 3 its partition).</summary>
    public void ReloadMaster()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var b in buckets)
        {
            var (offset, length) = Segments[b.Index];
            var weights = (partitioned?.Weights(b) ?? buffer.Params.narrow(0, b.Offset, b.Count)).narrow(0, offset - b.Offset, length);
            if (aware is null)
            {
                Master.narrow(0, stateOffsets[b.Index], length).copy_(weights);
                continue;
            }
            aware.Initialize(stateOffsets[b.Index], weights);
            if (partitioned?.IsPartitioned(b) == true) WriteParamPiece(b, weights.clone());
        }
    }

    /// <summary>This rank's piece of bucket <paramref name="b"/>'s weights in the model's dtype: its ZeRO 3 partition, or its
    /// segment of the weights every rank holds.</summary>
    private Tensor ParamPiece(GradBucket b)
    {
        var (offset, length) = Segments[b.Index];
        if (partitioned?.IsPartitioned(b) == true) return partitioned.Partition(b).narrow(0, 0, length);
        return (partitioned?.Weights(b) ?? buffer.Params.narrow(0, b.Offset, b.Count)).narrow(0, offset - b.Offset, length);
    }

    /// <summary>After <see cref="ParamPiece"/> was written: a ZeRO 3 unit's gathered copy is stale now, so it is released.</summary>
    private void WriteParamPiece(GradBucket b, Tensor values)
    {
        ParamPiece(b).copy_(values);
        if (partitioned?.IsPartitioned(b) == true) partitioned.Release(b);
    }

    /// <summary>This rank's averaged gradients, bucket by bucket (its pieces without their padding), each with its offset
    /// in the flat buffer: what its step reads, and what a loss scaler unscales.</summary>
    public IReadOnlyList<(Tensor Grads, long Offset)> GradShards() =>
        buckets.Select(b => (gradShards.narrow(0, pieceOffsets[b.Index], Segments[b.Index].Length), Segments[b.Index].Offset)).ToList();

    /// <summary>This rank's gradients as its step reads them (<see cref="GradShards"/> in float32:
    /// <see cref="ParamAndGradBuffer.Float32Grads"/>; precision-aware, the shards themselves), made in the caller's dispose scope.</summary>
    public IReadOnlyList<(Tensor Grads, long Offset)> MainGradShards() =>
        aware is not null ? GradShards() : GradShards().Select(g => (ParamAndGradBuffer.Float32Grads(g.Grads), g.Offset)).ToList();

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
            if (aware is null)
            {
                Rule.ClipAndUpdate(Master.narrow(0, at, length), grads[k].Grads, States.Select(s => s.narrow(0, at, length)).ToList(), null, decayed, total, lr, Step);
                continue;
            }
            // FusedAdam's step: float32 arithmetic on unscaled copies, each state stored back in its dtype, the weights written.
            var param = ParamPiece(buckets[k]);
            var w = aware.UnscaledMaster(at, length, param);
            var moments = new[] { aware.UnscaledMoment(0, at, length), aware.UnscaledMoment(1, at, length) };
            Rule.ClipAndUpdate(w, grads[k].Grads, moments, null, decayed, total, lr, Step);
            StoreAware(buckets[k], at, w, moments);
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

    private void StoreAware(GradBucket b, long at, Tensor master, IReadOnlyList<Tensor> moments)
    {
        var param = ParamPiece(b);
        aware!.StoreMaster(at, master, param);
        for (int i = 0; i < moments.Count; i++) aware.StoreMoment(i, at, moments[i]);
        if (partitioned?.IsPartitioned(b) == true) partitioned.Release(b);
    }

    /// <summary>The float32 master weights and states over this rank's part, as a checkpoint holds them: the tensors
    /// themselves, or precision-aware their float32 values (FusedAdam.state_dict() unscales every state to float32; the
    /// remainders are joined with the weights into the float32 master weights they stand for).</summary>
    /// <remarks>Precision-aware, beside them: each fp16 state's per-element scales ("master.scale", "exp_avg.scale",
    /// "exp_avg_sq.scale"), and with fp16 master weights this rank's 16-bit weights ("weights"), which they do not determine
    /// (Megatron's model checkpoint holds those), so that loading restores every stored bit.</remarks>
    public IReadOnlyList<(string Name, Tensor Tensor)> CheckpointTensors()
    {
        string[] names = ["master", .. Rule.States];
        if (aware is null) return [.. names.Zip([Master, .. States])];
        using var _ = no_grad();
        Tensor New() => empty(Master.numel(), dtype: ScalarType.Float32, device: Master.device);
        var tensors = names.Select(n => (Name: n, Tensor: New())).ToList();
        var scaled = Enumerable.Range(0, 3).Where(aware.Scaled).ToList();
        tensors.AddRange(scaled.Select(i => (names[i] + ".scale", New())));
        if (aware.Scaled(0)) tensors.Add(("weights", New()));
        foreach (var b in buckets)
        {
            long at = stateOffsets[b.Index], length = Segments[b.Index].Length;
            if (length == 0) continue;
            using var scope = NewDisposeScope();
            var param = ParamPiece(b);
            tensors[0].Tensor.narrow(0, at, length).copy_(aware.UnscaledMaster(at, length, param));
            for (int i = 0; i < 2; i++) tensors[i + 1].Tensor.narrow(0, at, length).copy_(aware.UnscaledMoment(i, at, length));
            for (int k = 0; k < scaled.Count; k++) tensors[3 + k].Tensor.narrow(0, at, length).copy_(aware.ElementScales(scaled[k], at, length));
            if (aware.Scaled(0)) tensors[^1].Tensor.narrow(0, at, length).copy_(param);
        }
        return tensors;
    }

    public IReadOnlySet<string> OptionalCheckpointTensors => new HashSet<string>(["master.scale", "exp_avg.scale", "exp_avg_sq.scale", "weights"]);

    /// <summary>After a checkpoint filled <see cref="CheckpointTensors"/>' tensors: precision-aware, stores them with the saved
    /// scales where the checkpoint has them (else rescaled, as FusedAdam.load_state_dict does) and this rank's pieces of the
    /// weights (the saved ones, else from the master weights).</summary>
    public void RestoreCheckpointTensors(IReadOnlyList<(string Name, Tensor Tensor)> loaded, IReadOnlySet<string> read)
    {
        if (aware is null) return;
        using var _ = no_grad();
        Tensor? Saved(string name) => read.Contains(name) ? loaded.Single(l => l.Name == name).Tensor : null;
        var values = loaded.Take(3).Select(l => l.Tensor).ToList();
        var scales = new[] { "master", "exp_avg", "exp_avg_sq" }.Select(n => Saved(n + ".scale")).ToList();
        var weights = Saved("weights");
        foreach (var b in buckets)
        {
            long at = stateOffsets[b.Index], length = Segments[b.Index].Length;
            if (length == 0) continue;
            using var scope = NewDisposeScope();
            Tensor Cut(Tensor t) => t.narrow(0, at, length);
            var param = ParamPiece(b);
            aware.StoreMaster(at, Cut(values[0]).clone(), param, scales[0] is { } s0 ? Cut(s0) : null, weights is null ? null : Cut(weights));
            for (int i = 0; i < 2; i++) aware.StoreMoment(i, at, Cut(values[i + 1]).clone(), scales[i + 1] is { } s ? Cut(s) : null);
            if (partitioned?.IsPartitioned(b) == true) partitioned.Release(b);
        }
    }

    /// <summary>Bytes per parameter of this rank's stored master weights and moments (precision-aware: in their dtypes).</summary>
    public long StateBytesPerElement => Master.element_size() + States.Sum(s => s.element_size());

    /// <summary>ZeRO 3: each unit's partition from this rank's master weights, in the model's dtype (precision-aware, the
    /// update wrote the partitions itself).</summary>
    private void UpdatePartitions()
    {
        if (partitioned is null || aware is not null) return;
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
        mine.narrow(0, 0, length).copy_(aware is null ? Master.narrow(0, stateOffsets[bucket.Index], length) : ParamPiece(bucket));
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
        if (aware is not null) aware.Dispose();
        else
        {
            Master.Dispose();
            foreach (var s in States) s.Dispose();
        }
    }
}
