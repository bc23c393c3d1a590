using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>What Megatron-Kwai's activation offload does to one model chunk's activations of one micro-batch.</summary>
/// <param name="Offloaded">Bytes copied to pinned host memory after the chunk's forward and freed on the GPU
/// (brought back before its backward).</param>
/// <param name="Stranded">Bytes the caching allocator holds beyond what stays on the GPU: the block that serves the
/// clone of the tensor the offload boundary splits is larger than the clone.</param>
/// <param name="Recorded">Bytes the cut chose from: what record()'s pack hook keeps of the chunk's saved tensors (those of
/// 1 MiB or more; under full recomputation the chunk's saved bytes). <paramref name="Recorded"/> less
/// <paramref name="Offloaded"/> stays on the GPU.</param>
public readonly record struct ChunkOffload(double Offloaded, double Stranded, double Recorded);

/// <summary>A tensor autograd saves during a chunk's forward, as offload.py's pack hook sees it, or <paramref name="Count"/>
/// alike ones (the same tensor of each layer of a chunk).</summary>
/// <param name="Strided">A view of a larger allocation (not is_contiguous() there: the halves of the SwiGLU FC1 output).</param>
public readonly record struct SavedTensor(double Bytes, bool Strided, int Count = 1);

/// <summary>
/// Megatron-Kwai's choice of what to offload for a ratio alpha (ATC'24 artifact, branch atc24ae,
/// megatron/core/pipeline_parallel/offload.py). record(): a saved-tensors pack hook collects the tensors autograd
/// saves during a chunk's forward, leaving out parameters, rotary frequencies and tensors under 1 MiB.
/// ActivationGroup: sorts them contiguous first, then by size, largest first, and reverses that order when alpha
/// is above 0.5 ("avoid offloading half FC1 output": the strided halves go first, then the smallest). offload_prologue:
/// counts each storage once, lays the tensors end to end, offloads the first ceil(alpha x total) bytes rounded up to
/// a MiB; the tensor that straddles that boundary is split: its head is offloaded, its tail cloned and kept
/// (remained_not_offloaded). With the artifact's PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:21 (examples/atc24,
/// pretrain_llama.sh), PyTorch's caching allocator (c10/cuda/CUDACachingAllocator.cpp) serves a request of at least
/// max_split_size from the smallest cached block that fits, whole and unsplit, if that block is less than kLargeBuffer
/// (20 MiB) larger, else from a new segment rounded up to 2 MiB; it counts the whole block as allocated. In the measured
/// iteration the cache holds blocks of every size the layers allocated, so the tail's clone costs its block, not its size,
/// for as long as the chunk waits for its backward. Not modelled: the clones of a split base's other views while the
/// copy is in flight (one chunk at a time).
/// </summary>
public static class Offload
{
    public const double MiB = 1 << 20;

    /// <summary>pack_hook leaves tensors under 1 MiB on the GPU.</summary>
    public const double MinTensorBytes = MiB;

    /// <summary>Above this ratio the order is reversed (ActivationGroup.__init__).</summary>
    public const double ReverseAbove = 0.5;

    /// <summary>PyTorch's kLargeBuffer: how much larger than a request an unsplit cached block may be.</summary>
    public const double LargeBuffer = 20 * MiB;

    /// <summary>PyTorch's kRoundLarge: new segments for large requests are rounded up to 2 MiB.</summary>
    public const double RoundLarge = 2 * MiB;

    /// <summary>
    /// The offload of one chunk of <paramref name="layers"/> layers, each materializing <paramref name="tensors"/>
    /// (<see cref="Activations.LayerTensors"/>), holding <paramref name="chunkBytes"/> of saved activations. Under full
    /// recomputation the saved tensors are whole layer inputs, offloaded as alpha of the bytes. <paramref name="ahead"/> is a
    /// tensor the chunk's forward saves before its layers (the embedding's dropout mask in the model's first chunk): record()
    /// wraps the whole forward step, so it is one more tensor of the same cut, kept on the GPU by pack_hook under 1 MiB.
    /// </summary>
    public static ChunkOffload Chunk(ReadOnlySpan<LayerTensor> tensors, RunDescription c, int layers, double chunkBytes, double ahead = 0)
    {
        double alpha = c.OffloadRatio;
        if (alpha <= 0) return default;
        if (c.RecomputeOrNone.Granularity == RecomputeGranularity.Full)
        {
            double total = chunkBytes + (ahead >= MinTensorBytes ? ahead : 0);
            return new ChunkOffload(Math.Min(RoundUp(Math.Ceiling(alpha * total), MiB), total), 0, total); // a cut never takes more than the chunk holds, as Select caps it
        }

        // Each entry stands for its copies in every layer of the chunk, adjacent in the sorted order: the layers are alike.
        Span<SavedTensor> saved = stackalloc SavedTensor[Activations.MaxLayerTensors + 1];
        int k = 0;
        if (ahead > 0) saved[k++] = new SavedTensor(ahead, false);
        foreach (var t in tensors)
            if (t.Kept) saved[k++] = new SavedTensor(t.Bytes, t.Strided, layers);
        double recorded = Recordable(saved[..k]);
        Span<double> heads = stackalloc double[k];
        double offloaded = Select(saved[..k], alpha, heads);
        for (int j = 0; j < k; j++)
            if (heads[j] % saved[j].Bytes is > 0 and var head)
                return new ChunkOffload(offloaded, Stranded(saved[j].Bytes - head, c.MaxSplitSizeMb, tensors), recorded);
        return new ChunkOffload(offloaded, 0, recorded);
    }

    /// <summary>
    /// offload_prologue's cut over <paramref name="saved"/> (each storage once, in the order autograd saved them): writes
    /// into <paramref name="offloaded"/> the bytes of each entry that go to the host, its head where the boundary splits
    /// it, 0 for one pack_hook leaves out (under 1 MiB); returns their sum. The simulator and the executor's offload both
    /// cut here.
    /// </summary>
    public static double Select(ReadOnlySpan<SavedTensor> saved, double alpha, Span<double> offloaded) =>
        Select(saved, alpha, offloaded, MinTensorBytes);

    /// <summary>Bytes the cut chooses from: every copy of each entry of at least <paramref name="minBytes"/> (pack_hook
    /// keeps the smaller ones on the GPU).</summary>
    public static double Recordable(ReadOnlySpan<SavedTensor> saved, double minBytes = MinTensorBytes)
    {
        double total = 0;
        foreach (var t in saved)
            if (t.Bytes >= minBytes) total += t.Count * t.Bytes;
        return total;
    }

    /// <summary>The same cut over the tensors of at least <paramref name="minBytes"/>.</summary>
    public static double Select(ReadOnlySpan<SavedTensor> saved, double alpha, Span<double> offloaded, double minBytes)
    {
        offloaded.Clear();
        int n = saved.Length, k = 0;
        Span<int> order = n <= 64 ? stackalloc int[n] : new int[n];
        for (int i = 0; i < n; i++)
        {
            if (saved[i].Bytes < minBytes) continue;
            // Stable insertion by (strided, larger first), as Python's sorted.
            int j = k++;
            while (j > 0 && Before(saved[i], saved[order[j - 1]])) { order[j] = order[j - 1]; j--; }
            order[j] = i;
        }
        double total = Recordable(saved, minBytes);
        if (alpha <= 0 || total <= 0) return 0;
        double size = RoundUp(Math.Ceiling(alpha * total), MiB), begin = 0;
        for (int j = 0; j < k && begin < size; j++)
        {
            int i = order[alpha > ReverseAbove ? k - 1 - j : j];
            double bytes = saved[i].Count * saved[i].Bytes;
            offloaded[i] = Math.Min(bytes, size - begin);
            begin += bytes;
        }
        return Math.Min(size, total);
    }

    /// <summary>Bytes the caching allocator counts beyond a request of <paramref name="bytes"/>: nothing below
    /// max_split_size (the block is split to size), else the smallest cached block of the layer's sizes that is less
    /// than kLargeBuffer larger, else a new segment rounded up to 2 MiB.</summary>
    public static double Stranded(double bytes, int? maxSplitSizeMb, ReadOnlySpan<LayerTensor> cached)
    {
        if (maxSplitSizeMb is not int split || bytes < split * MiB) return 0;
        double best = double.PositiveInfinity;
        foreach (var t in cached)
            if (t.Storage >= bytes && t.Storage < best) best = t.Storage;
        return best < bytes + LargeBuffer ? best - bytes : RoundUp(bytes, RoundLarge) - bytes;
    }

    private static bool Before(SavedTensor a, SavedTensor b) =>
        a.Strided != b.Strided ? !a.Strided : a.Bytes > b.Bytes;

    private static double RoundUp(double bytes, double unit) => Math.Ceiling(bytes / unit) * unit;
}
