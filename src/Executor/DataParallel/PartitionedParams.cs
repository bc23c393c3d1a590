using Harness.Executor.Distributed;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using static TorchSharp.torch;

namespace Harness.Executor.DataParallel;

/// <summary>
/// ZeRO 3's partitioned weights (Rajbhandari et al. 2020, P_os+g+p; DeepSpeed's deepspeed/runtime/zero/partition_parameters.py at 38327e0): each ZeRO 3
/// bucket (<see cref="GradBucket.OfUnits"/>: a layer's weight matrices, the embeddings, the output layer) is a gather unit
/// whose parameters are views into one flat tensor of the bucket's padded length. Between uses that tensor holds no memory
/// (<see cref="StorageBytes"/>); a rank keeps only its partition, the r-th 1/d of the bucket in the model's dtype (DeepSpeed's
/// ds_tensor), refreshed from the optimizer's master weights after each step. <see cref="Fetch"/> all-gathers the partitions
/// into the flat tensor on the communication stream and makes compute wait for it; <see cref="Prefetch"/> only launches
/// that all-gather, so it runs beside compute; <see cref="Release"/> frees the flat tensor again. The vectors (norms and
/// biases) stay whole on every rank, as DeepSpeed keeps parameters below stage3_param_persistence_threshold (1e5 elements,
/// zero/config.py) resident: they are gathered after each step like ZeRO 1's weights.
/// <see cref="PeakResidentBytes"/> measures what the parameters hold at the fullest moment: the bytes of every storage under
/// them (partitions, gathered units, vectors), read from libtorch, each time a gather allocates.
/// </summary>
public sealed class PartitionedParams : IDisposable
{
    private enum State { Released, Gathering, Present }

    private sealed record Unit(GradBucket Bucket, Tensor Full, Tensor? Partition)
    {
        public State State { get; set; } = State.Present;
    }

    private readonly Unit[] units;
    private readonly ICommunicator dataParallel;
    private readonly ICommunicationStream stream;

    /// <summary>Takes every parameter of <paramref name="buffer"/> (created whole on every rank) into its bucket's flat tensor and
    /// this rank's partition of it; everything stays gathered until released.</summary>
    public PartitionedParams(ParamAndGradBuffer buffer, IReadOnlyList<GradBucket> buckets, ICommunicator dataParallel, ICommunicationStream stream)
    {
        (this.dataParallel, this.stream) = (dataParallel, stream);
        int d = dataParallel.Size, r = dataParallel.Rank;
        using var _ = no_grad();
        units = buckets.Select(b =>
        {
            var first = buffer.Layout.First(l => l.Offset == b.Offset).Parameter;
            var full = zeros(b.PaddedCount(d), dtype: first.dtype, device: first.device).DetachFromDisposeScope();
            foreach (var (_, p, offset) in buffer.Layout.Where(l => l.Offset >= b.Offset && l.Offset < b.Offset + b.Count))
            {
                using var view = full.narrow(0, offset - b.Offset, p.numel()).view(p.shape);
                view.copy_(p);
                p.set_(view);
            }
            long piece = b.PaddedCount(d) / d;
            using var mine = b.Offset >= buffer.DecayedCount ? null : full.narrow(0, r * piece, piece); // held until clone returns
            var partition = mine?.clone().DetachFromDisposeScope();
            return new Unit(b, full, partition);
        }).ToArray();
        ResetPeak();
    }

    /// <summary>The most bytes the parameters held at once since <see cref="ResetPeak"/>.</summary>
    public long PeakResidentBytes { get; private set; }

    /// <summary>Bytes under the parameters now: partitions, gathered units and the resident vectors.</summary>
    public long ResidentBytes => units.Sum(u => StorageBytes.Of(u.Full) + (u.Partition is null ? 0 : StorageBytes.Of(u.Partition)));

    public void ResetPeak() => PeakResidentBytes = ResidentBytes;

    /// <summary>Whether <paramref name="bucket"/>'s weights are partitioned (a gather unit) rather than kept whole (the vectors).</summary>
    public bool IsPartitioned(GradBucket bucket) => units[bucket.Index].Partition is not null;

    /// <summary>The bucket's weights, gathered (the caller fetched them): where the optimizer reads its master weights from.</summary>
    public Tensor Weights(GradBucket bucket)
    {
        var unit = units[bucket.Index];
        if (unit.State != State.Present) throw new InvalidOperationException($"bucket {bucket.Index}'s weights are not gathered.");
        return unit.Full.narrow(0, 0, bucket.Count);
    }

    /// <summary>This rank's partition of a unit, as it stands (the precision-aware optimizer reads and writes its weights there,
    /// then releases the unit).</summary>
    public Tensor Partition(GradBucket bucket) => units[bucket.Index].Partition!;

    /// <summary>This rank's partition of a unit from its <paramref name="length"/> master weights (the piece the optimizer owns);
    /// the unit's gathered copy is stale, so it is released.</summary>
    public void SetPartition(GradBucket bucket, Tensor master)
    {
        Release(bucket);
        using var _ = no_grad();
        using var into = units[bucket.Index].Partition!.narrow(0, 0, master.numel());
        into.copy_(master);
    }

    /// <summary>Launches the all-gather of a released unit on the communication stream.</summary>
    public void Prefetch(GradBucket bucket)
    {
        var unit = units[bucket.Index];
        if (unit.State != State.Released) return;
        StorageBytes.Resize(unit.Full, unit.Full.numel() * unit.Full.element_size());
        PeakResidentBytes = Math.Max(PeakResidentBytes, ResidentBytes);
        stream.WaitForCompute();
        using (stream.Enqueue(dataParallel)) dataParallel.AllGather(unit.Partition!, unit.Full);
        unit.State = State.Gathering;
    }

    /// <summary>The unit's weights, ready for compute: gathered now, or the prefetch waited for.</summary>
    public void Fetch(GradBucket bucket)
    {
        Prefetch(bucket);
        if (units[bucket.Index].State == State.Gathering) Join();
    }

    /// <summary>Frees a unit's gathered weights (a vector bucket stays); one still gathering is waited for first.</summary>
    public void Release(GradBucket bucket)
    {
        var unit = units[bucket.Index];
        if (unit.Partition is null || unit.State == State.Released) return;
        if (unit.State == State.Gathering) Join();
        StorageBytes.Resize(unit.Full, 0);
        unit.State = State.Released;
    }

    public void ReleaseAll()
    {
        foreach (var unit in units) Release(unit.Bucket);
    }

    /// <summary>Every unit gathered: before the weights are read or set whole (loading them, reading them at the end).</summary>
    public void GatherAll()
    {
        foreach (var unit in units) Prefetch(unit.Bucket);
        Join();
    }

    /// <summary>Compute waits for everything the communication stream was given: every unit gathering is then present.</summary>
    private void Join()
    {
        stream.JoinCompute();
        foreach (var unit in units.Where(u => u.State == State.Gathering)) unit.State = State.Present;
    }

    public void Dispose()
    {
        foreach (var unit in units)
        {
            unit.Full.Dispose();
            unit.Partition?.Dispose();
        }
    }
}
