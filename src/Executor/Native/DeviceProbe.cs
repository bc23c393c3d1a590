namespace Harness.Executor.Native;

/// <summary>
/// The device readings every run records, single-device or one rank of many, so they mean the same in both:
/// the device's name, its memory in use (NVML's used bytes on a GPU, the process working set on CPU), and on a GPU the
/// caching allocator's peak allocated bytes (torch.cuda.max_memory_allocated; null where they cannot be read).
/// </summary>
public static class DeviceProbe
{
    public static long? AllocatedPeakBytes(bool cuda, int index) => cuda ? CachingAllocatorStats.Read(index)?.AllocatedPeak : null;

    public static string Name(bool cuda, int index) =>
        cuda ? Nvml.DeviceName(index) ?? $"CUDA device {index}" : $"CPU ({Environment.ProcessorCount} threads)";

    public static long UsedBytes(bool cuda, int index) => cuda ? Nvml.UsedBytes(index) ?? 0 : Environment.WorkingSet;
}
