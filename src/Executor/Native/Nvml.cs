using System.Runtime.InteropServices;
using System.Text;

namespace Harness.Executor.Native;

/// <summary>
/// The NVIDIA Management Library (libnvidia-ml.so.1, shipped with the driver) for what TorchSharp does not expose:
/// the GPU's name and its memory in use. NVML's "used" counts everything on the device: the CUDA context plus the
/// caching allocator's reserved pool (which never shrinks during training, so after an iteration it equals the
/// peak reserved so far). It is not torch.cuda.max_memory_allocated, which TorchSharp lacks.
/// </summary>
public static class Nvml
{
    private const string Library = "libnvidia-ml.so.1";

    [StructLayout(LayoutKind.Sequential)]
    private struct Memory { public ulong Total, Free, Used; }

    [DllImport(Library, EntryPoint = "nvmlInit_v2")] private static extern int Init();
    [DllImport(Library, EntryPoint = "nvmlDeviceGetCount_v2")] private static extern int GetCount(out uint count);
    [DllImport(Library, EntryPoint = "nvmlDeviceGetHandleByIndex_v2")] private static extern int HandleByIndex(uint index, out IntPtr device);
    [DllImport(Library, EntryPoint = "nvmlDeviceGetName")] private static extern int GetName(IntPtr device, byte[] name, uint length);
    [DllImport(Library, EntryPoint = "nvmlDeviceGetMemoryInfo")] private static extern int GetMemory(IntPtr device, out Memory memory);

    private static readonly Lazy<bool> Ready = new(() =>
    {
        try { return Init() == 0; }
        catch (DllNotFoundException) { return false; }
        catch (EntryPointNotFoundException) { return false; }
    });

    /// <summary>The node's GPUs as the driver counts them (CUDA_VISIBLE_DEVICES aside), or null without NVML.</summary>
    public static int? DeviceCount => Ready.Value && GetCount(out uint count) == 0 ? (int)count : null;

    /// <summary>The GPU's marketing name (e.g. "NVIDIA H100 80GB HBM3"), or null without NVML.</summary>
    public static string? DeviceName(int index)
    {
        if (!Ready.Value || HandleByIndex((uint)index, out var device) != 0) return null;
        var buffer = new byte[96];
        return GetName(device, buffer, (uint)buffer.Length) == 0 ? Encoding.ASCII.GetString(buffer).TrimEnd('\0') : null;
    }

    /// <summary>Bytes in use on the GPU as NVML reports them, or null without NVML.</summary>
    public static long? UsedBytes(int index)
    {
        if (!Ready.Value || HandleByIndex((uint)index, out var device) != 0) return null;
        return GetMemory(device, out var m) == 0 ? (long)m.Used : null;
    }
}
