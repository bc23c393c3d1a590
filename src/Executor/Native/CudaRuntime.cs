using System.Runtime.InteropServices;

namespace Harness.Executor.Native;

/// <summary>
/// The few CUDA runtime calls TorchSharp does not expose: the current device (NCCL binds a communicator to it),
/// events, which time each NCCL call on the GPU and tell the watchdog when it finished, and the streams and
/// cross-stream waits that let communication overlap compute (the NCCL backend's communication stream), the asynchronous
/// copies of activation offload, and the profiler
/// range (Megatron's --profile: what Nsight captures with --capture-range=cudaProfilerApi). The runtime is the
/// one libtorch's CUDA build already loaded (libcudart by soname).
/// </summary>
internal static unsafe class CudaRuntime
{
    private static readonly Lazy<IntPtr> Handle = new(Load);

    private static IntPtr Export(string name) => NativeLibrary.GetExport(Handle.Value, name);

    /// <summary>cudaErrorNotReady: the event's work has not finished yet.</summary>
    public const int NotReady = 600;

    /// <summary>cudaStreamNonBlocking: the stream does not synchronize implicitly with the legacy default stream.</summary>
    public const uint StreamNonBlocking = 1;

    /// <summary>cudaEventDisableTiming: an event used only for ordering, which records faster.</summary>
    public const uint EventDisableTiming = 2;

    public static readonly delegate* unmanaged<int, int> SetDevice = (delegate* unmanaged<int, int>)Export("cudaSetDevice");
    public static readonly delegate* unmanaged<IntPtr*, int> EventCreate = (delegate* unmanaged<IntPtr*, int>)Export("cudaEventCreate");
    public static readonly delegate* unmanaged<IntPtr, IntPtr, int> EventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("cudaEventRecord");
    public static readonly delegate* unmanaged<IntPtr, int> EventQuery = (delegate* unmanaged<IntPtr, int>)Export("cudaEventQuery");
    public static readonly delegate* unmanaged<float*, IntPtr, IntPtr, int> EventElapsedTime = (delegate* unmanaged<float*, IntPtr, IntPtr, int>)Export("cudaEventElapsedTime");
    public static readonly delegate* unmanaged<IntPtr, int> EventDestroy = (delegate* unmanaged<IntPtr, int>)Export("cudaEventDestroy");
    public static readonly delegate* unmanaged<IntPtr*, uint, int> StreamCreateWithFlags = (delegate* unmanaged<IntPtr*, uint, int>)Export("cudaStreamCreateWithFlags");
    public static readonly delegate* unmanaged<IntPtr, IntPtr, uint, int> StreamWaitEvent = (delegate* unmanaged<IntPtr, IntPtr, uint, int>)Export("cudaStreamWaitEvent");
    public static readonly delegate* unmanaged<IntPtr, int> StreamDestroy = (delegate* unmanaged<IntPtr, int>)Export("cudaStreamDestroy");
    public static readonly delegate* unmanaged<IntPtr*, uint, int> EventCreateWithFlags = (delegate* unmanaged<IntPtr*, uint, int>)Export("cudaEventCreateWithFlags");
    public static readonly delegate* unmanaged<IntPtr, int> StreamSynchronize = (delegate* unmanaged<IntPtr, int>)Export("cudaStreamSynchronize");
    /// <summary>cudaMemcpyDefault: the direction follows from the pointers (unified addressing).</summary>
    public const int MemcpyDefault = 4;

    public static readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, IntPtr, int> MemcpyAsync = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, IntPtr, int>)Export("cudaMemcpyAsync");
    public static readonly delegate* unmanaged<int> ProfilerStart = (delegate* unmanaged<int>)Export("cudaProfilerStart");
    public static readonly delegate* unmanaged<int> ProfilerStop = (delegate* unmanaged<int>)Export("cudaProfilerStop");
    public static readonly delegate* unmanaged<int, IntPtr> GetErrorString = (delegate* unmanaged<int, IntPtr>)Export("cudaGetErrorString");

    public static void Check(int error, string call)
    {
        if (error != 0)
            throw new CudaException($"{call} failed: {Marshal.PtrToStringAnsi(GetErrorString(error)) ?? error.ToString()}.");
    }

    private static IntPtr Load()
    {
        string[] names = ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"];
        foreach (var n in names)
            if (NativeLibrary.TryLoad(n, out var h)) return h;
        throw new CudaException($"the CUDA runtime ({string.Join(", ", names)}) is not loaded; initialize libtorch with CUDA before creating an NCCL communicator.");
    }
}
