namespace Harness.Executor.Offload;

/// <summary>What one chunk's forward of one micro-batch saved and offloaded, in bytes (the executor's bookkeeping).</summary>
public readonly record struct OffloadRecord(int MicroBatch, int Chunk, double SavedBytes, double OffloadedBytes)
{
    public double ResidentBytes => SavedBytes - OffloadedBytes;
}

/// <summary>
/// Megatron-Kwai's activation offload over one rank's pipeline schedule (ATC'24 artifact, branch atc24ae,
/// megatron/core/pipeline_parallel/schedules.py with offload.py; --kaimm-offload-activation-ratio alpha): each model chunk's
/// forward records what autograd saves; after it, alpha of that (<see cref="ChunkOffload"/>) is copied to the host, and
/// the device memory is freed once the next operation has been issued (offload_async around the next forward keeps the
/// copy's tensors until it exits); before the chunk's backward it is back, its reload started before the previous backward
/// (onload_async prefetches the next backward's chunk into the other of two buffers). So at most four chunks' offloaded
/// bytes are on the device at once: the forward in progress, the one whose copy is in flight, the backward in progress and
/// the one prefetched (the simulator's PipelineCosts.OffloadWindowChunks). The model's last chunk is not offloaded: its
/// backward follows its forward at once.
/// </summary>
public sealed class ActivationOffloader(double alpha, IHostLink link) : IDisposable
{
    private readonly Dictionary<(int Micro, int Chunk), ChunkOffload> offloaded = [];
    private readonly List<OffloadRecord> records = [];
    private ChunkOffload? pending;
    private (int Micro, int Chunk)? prefetched;

    /// <summary>Every offloaded chunk's bytes, in the order of their forwards.</summary>
    public IReadOnlyList<OffloadRecord> Records => records;

    /// <summary>After a chunk's forward: <paramref name="saved"/> (recorded during it) is cut and its copy started, or, when
    /// <paramref name="offload"/> is false, left to autograd.</summary>
    public void AfterForward(int micro, int chunk, SavedActivations saved, bool offload)
    {
        EndPending();
        if (!offload)
        {
            saved.Dispose();
            return;
        }
        var o = new ChunkOffload(saved, alpha, link);
        offloaded[(micro, chunk)] = o;
        records.Add(new OffloadRecord(micro, chunk, o.SavedBytes, o.OffloadedBytes));
        pending = o;
    }

    /// <summary>Before a chunk's backward: its activations back on the device, and the reload of <paramref name="next"/>
    /// (the next backward's chunk, null if none) started.</summary>
    public void BeforeBackward(int micro, int chunk, (int Micro, int Chunk)? next)
    {
        var key = (micro, chunk);
        if (offloaded.TryGetValue(key, out var o))
        {
            if (ReferenceEquals(o, pending)) EndPending();
            if (prefetched != key) o.BeginReload();
            o.EndReload();
        }
        prefetched = null;
        if (next is { } n && offloaded.TryGetValue(n, out var following) && !ReferenceEquals(following, pending))
        {
            following.BeginReload();
            prefetched = n;
        }
    }

    /// <summary>After a chunk's backward: its offload state goes, and a copy in flight since the last forward is done.</summary>
    public void AfterBackward(int micro, int chunk)
    {
        EndPending();
        if (offloaded.Remove((micro, chunk), out var o)) o.Dispose();
    }

    private void EndPending()
    {
        pending?.End();
        pending = null;
    }

    public void Dispose()
    {
        EndPending();
        foreach (var o in offloaded.Values) o.Dispose();
        offloaded.Clear();
    }
}
