namespace Harness.Executor.Native;

/// <summary>One reading of the CUDA caching allocator: what torch.cuda.memory_allocated / max_memory_allocated /
/// memory_reserved / max_memory_reserved report, and the allocator's retries (a cudaMalloc that failed, the cache freed,
/// and tried again: fragmentation's cost) and out-of-memory errors.</summary>
public readonly record struct AllocatorReading(long Allocated, long AllocatedPeak, long Reserved, long ReservedPeak, long Retries, long OutOfMemory);

/// <summary>
/// PyTorch's caching-allocator statistics for a process that TorchSharp runs, which binds none: the peak allocated bytes
/// are what Megatron's memory report and Megatron-Kwai's Figure 7 list (torch.cuda.max_memory_allocated), and what the
/// simulator's memory model predicts; NVML's used bytes also count the CUDA context and the allocator's cached reserve.
/// Read through <see cref="LibtorchShim"/>; where it cannot be built the readings are null and <see cref="Unavailable"/> says why.
/// </summary>
public static unsafe class CachingAllocatorStats
{
    /// <summary>Why the statistics cannot be read in this process (null when they can, or before CUDA is initialized).</summary>
    public static string? Unavailable => LibtorchShim.Unavailable;

    /// <summary>The allocator's statistics for CUDA device <paramref name="device"/>, or null where they cannot be read.</summary>
    public static AllocatorReading? Read(int device)
    {
        if (LibtorchShim.Export("harness_allocator_stats") is not IntPtr stats) return null;
        var v = stackalloc long[6];
        if (((delegate* unmanaged<int, long*, int>)stats)(device, v) != 0) return null;
        return new AllocatorReading(v[0], v[1], v[2], v[3], v[4], v[5]);
    }

    /// <summary>torch.cuda.reset_peak_memory_stats: the peaks restart from what is allocated now. Whether it could.</summary>
    public static bool ResetPeaks(int device) =>
        LibtorchShim.Export("harness_allocator_reset_peaks") is IntPtr reset && ((delegate* unmanaged<int, int>)reset)(device) == 0;
}
