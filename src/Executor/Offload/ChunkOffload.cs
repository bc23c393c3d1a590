using Harness.Executor.Native;
using Harness.Simulator.Costs;
using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// Megatron-Kwai's offload of one model chunk's saved activations for one micro-batch (ATC'24 artifact,
/// megatron/core/pipeline_parallel/offload.py, ActivationGroup): the cut is <see cref="Simulator.Costs.Offload.Select"/>'s, the simulator's.
/// Kwai's pack hook hands autograd a wrapper whose tensor it drops; here autograd holds the tensors themselves, so the
/// memory goes by storage instead (<see cref="StorageBytes"/>): every storage a selected tensor views is emptied, each of its
/// recorded tensors leaving its selected head on the host and its tail as a device copy (remained_not_offloaded; a view that
/// shares a split storage and is not selected is copied whole, as Kwai clones the other views of a partially offloaded
/// base), and the reload allocates the storage again and writes every recorded tensor back into its place, the same bits.
/// What autograd saved of a storage beyond its recorded tensors would not be written back, so the layers record every view
/// autograd keeps of a storage they record: the QKV projection holds V, and Q and K unless rotary made copies of them.
/// <see cref="Begin"/> and <see cref="End"/> split each direction where the copies overlap compute.
/// </summary>
public sealed class ChunkOffload : IDisposable
{
    private readonly IHostLink link;
    private readonly List<Part> parts = [];
    private readonly List<Tensor> handles = [];
    private readonly List<long> bytes = [];
    /// <summary>What the copies on the host link read, kept until the copies are fenced: the caching allocators do not see a
    /// copy on the link's stream, so a tensor freed before its fence could be handed out again and overwritten while the copy
    /// still reads it (a non-contiguous recorded tensor's flat copy in the forward, the host copy of a head in the reload,
    /// which the link itself keeps until its copy has run on the GPU: CudaHostLink).</summary>
    private readonly List<Tensor> inFlight = [];
    private SavedActivations? saved;
    private bool reloading;

    /// <summary>A recorded tensor: its place, its head on the host and its tail on the device while offloaded.</summary>
    private sealed record Part(int Handle, long[] Shape, long[] Strides, long Offset, Tensor Tail)
    {
        /// <summary>On the host while offloaded; from the reload on, the device buffer a strided or split tensor's head comes
        /// back into, or none where the whole tensor comes straight back into its place.</summary>
        public Tensor? Head { get; set; }
    }

    /// <summary>Bytes of the recorded tensors the cut chooses from (those of at least the minimum size), each once.</summary>
    public double SavedBytes { get; }

    /// <summary>Bytes of them that went to the host.</summary>
    public double OffloadedBytes { get; }

    /// <summary>Bytes of them left on the device while offloaded.</summary>
    public double ResidentBytes => SavedBytes - OffloadedBytes;

    /// <summary>Cuts <paramref name="activations"/> at <paramref name="alpha"/> and starts copying the selected heads to the host.
    /// Its tensors outlive the dispose scopes of the forward and backward that make them.</summary>
    /// <param name="minBytes">Tensors below it stay (pack_hook's 1 MiB; Transformer Engine's offload takes every one).</param>
    public ChunkOffload(SavedActivations activations, double alpha, IHostLink link, double minBytes = Simulator.Costs.Offload.MinTensorBytes)
    {
        (saved, this.link) = (activations, link);
        var tensors = activations.Tensors;
        var candidates = tensors.Select(t => new SavedTensor(Bytes(t), StorageBytes.Of(t) > Bytes(t))).ToArray();
        var heads = new double[tensors.Count];
        OffloadedBytes = Simulator.Costs.Offload.Select(candidates, alpha, heads, minBytes);
        SavedBytes = Simulator.Costs.Offload.Recordable(candidates, minBytes);
        using var _ = no_grad();
        var emptied = new Dictionary<IntPtr, int>();
        for (int i = 0; i < tensors.Count; i++)
            if (heads[i] > 0) emptied.TryAdd(StorageBytes.Base(tensors[i]), emptied.Count);
        foreach (var (storage, index) in emptied.OrderBy(e => e.Value))
        {
            var first = tensors.First(t => StorageBytes.Base(t) == storage);
            handles.Add(StorageBytes.Handle(first).DetachFromDisposeScope());
            bytes.Add(StorageBytes.Of(first));
        }
        for (int i = 0; i < tensors.Count; i++)
        {
            if (!emptied.TryGetValue(StorageBytes.Base(tensors[i]), out int handle)) continue;
            var t = tensors[i];
            using var scope = NewDisposeScope();
            var flat = t.reshape(-1);
            long head = (long)(heads[i] / t.ElementSize), n = flat.shape[0];
            var part = new Part(handle, t.shape, t.stride(), t.storage_offset(), flat.narrow(0, head, n - head).clone().DetachFromDisposeScope());
            // The head on the device until its copy to the host is issued below.
            if (head > 0) part.Head = flat.narrow(0, 0, head).contiguous().DetachFromDisposeScope();
            parts.Add(part);
        }
        // The copies start once the compute stream has made what they read: a non-contiguous tensor's flat copy is made
        // just above, on the compute stream, which the link's stream does not follow by itself.
        link.AfterCompute();
        foreach (var part in parts)
            if (part.Head is { } source)
            {
                inFlight.Add(source);
                part.Head = link.ToHost(source).DetachFromDisposeScope();
            }
    }

    /// <summary>Frees the emptied storages once the copies out of them are done: they stay allocated until then.</summary>
    public void End()
    {
        link.Fence();
        ReleaseInFlight();
        for (int h = 0; h < handles.Count; h++) StorageBytes.Resize(handles[h], 0);
        saved?.Dispose();
        saved = null;
    }

    /// <summary>Allocates the emptied storages again and starts copying the heads back: a whole tensor of a contiguous place
    /// straight into it, a head of anything else into a device buffer that <see cref="EndReload"/> writes from. Everything a
    /// copy writes is allocated before the copy stream is told to wait for the compute stream: the caching allocator hands a
    /// block freed on the compute stream to the next allocation at once, whatever work on that stream still uses it, so a
    /// target allocated after the wait could be a block another rank thread's kernel, issued after the wait, still reads
    /// (ranks on one GPU share the compute stream). Called once per offload.</summary>
    public void BeginReload()
    {
        if (reloading) throw new InvalidOperationException("a chunk's offload is reloaded once; its host buffers may be another's by now.");
        reloading = true;
        using var _ = no_grad();
        for (int h = 0; h < handles.Count; h++) StorageBytes.Resize(handles[h], bytes[h]);
        var copies = new List<(Tensor Host, Tensor Target)>();
        foreach (var part in parts)
            if (part.Head is { } host)
            {
                var place = Place(part);
                if (part.Tail.numel() == 0 && place.is_contiguous())
                {
                    // The whole tensor, straight into its place (every saved tensor but the QKV projection's strided views).
                    inFlight.Add(place); // a view of the storage, which the handle keeps
                    part.Head = null;
                }
                else
                {
                    place.Dispose();
                    place = part.Head = empty(host.shape, host.dtype, handles[part.Handle].device).DetachFromDisposeScope();
                }
                copies.Add((host, place));
                inFlight.Add(host);
            }
        link.AfterCompute();
        foreach (var (host, target) in copies) link.ToDeviceInto(host, target);
    }

    /// <summary>Writes every recorded tensor not yet in its place back into its storage once the copies are done, then lets go
    /// of everything the offload held on the device: the storages are autograd's again, freed as its backward releases the
    /// saved tensors (held here until the micro-batch ended, the reloaded layers' storages and device buffers stayed on the
    /// GPU through the rest of backward: an H100 lease, 2026-12-07, measured more peak memory with offload than without).</summary>
    public void EndReload()
    {
        link.Fence();
        ReleaseInFlight();
        using var _ = no_grad();
        foreach (var part in parts)
        {
            if (part.Head is not null || part.Tail.numel() > 0) // else it came straight back into its place
                using (var scope = NewDisposeScope())
                {
                    var values = part.Head is { } head ? (part.Tail.numel() == 0 ? head : cat([head, part.Tail])) : part.Tail;
                    Place(part).copy_(values.view(part.Shape));
                }
            part.Head?.Dispose();
            part.Tail.Dispose();
        }
        parts.Clear();
        foreach (var h in handles) h.Dispose();
        handles.Clear();
    }

    /// <summary>Bytes the offload itself still references: the storages it empties and reloads, and its copies of the recorded
    /// tensors (0 once they are back in place).</summary>
    public double HeldBytes => handles.Sum(h => (double)StorageBytes.Of(h)) + parts.Sum(p => Bytes(p.Tail) + (p.Head is { } head ? Bytes(head) : 0));

    /// <summary>The recorded tensor's place in its storage.</summary>
    private Tensor Place(Part part) => handles[part.Handle].as_strided(part.Shape, part.Strides, part.Offset);

    private void ReleaseInFlight()
    {
        foreach (var t in inFlight) t.Dispose();
        inFlight.Clear();
    }

    private static double Bytes(Tensor t) => (double)t.NumberOfElements * t.ElementSize;

    public void Dispose()
    {
        ReleaseInFlight();
        saved?.Dispose();
        foreach (var part in parts)
        {
            part.Head?.Dispose();
            part.Tail.Dispose();
        }
        foreach (var h in handles) h.Dispose();
    }
}
