using System.Runtime.InteropServices;

namespace Harness.Executor.Distributed.Nccl;

/// <summary>Result codes of ncclResult_t (nccl.h).</summary>
internal enum NcclResult
{
    Success = 0, UnhandledCudaError = 1, SystemError = 2, InternalError = 3, InvalidArgument = 4,
    InvalidUsage = 5, RemoteError = 6, InProgress = 7,
}

/// <summary>ncclDataType_t (nccl.h).</summary>
internal enum NcclDataType
{
    Int8 = 0, Uint8 = 1, Int32 = 2, Uint32 = 3, Int64 = 4, Uint64 = 5, Float16 = 6, Float32 = 7, Float64 = 8, Bfloat16 = 9,
}

/// <summary>ncclUniqueId: 128 opaque bytes made by rank 0 and shared with every rank before ncclCommInitRank.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NcclUniqueId
{
    public const int Bytes = 128;
    public fixed byte Internal[Bytes];
}

/// <summary>
/// NCCL's C API through function pointers resolved from libnccl.so.2 (no DllImport resolver, so nothing clashes
/// with TorchSharp's own). PyTorch's CUDA libtorch links NCCL (its nvidia.nccl package), so once libtorch is
/// loaded the library is found by its soname; HARNESS_NCCL (a file or folder) names another one.
/// Every call returns ncclResult_t; <see cref="Check"/> turns failures into <see cref="CommunicatorException"/>.
/// </summary>
internal static unsafe class NcclLibrary
{
    private static readonly Lazy<IntPtr> Handle = new(Load);

    private static IntPtr Export(string name) => NativeLibrary.GetExport(Handle.Value, name);

    public static readonly delegate* unmanaged<int*, NcclResult> GetVersion = (delegate* unmanaged<int*, NcclResult>)Export("ncclGetVersion");
    public static readonly delegate* unmanaged<NcclUniqueId*, NcclResult> GetUniqueId = (delegate* unmanaged<NcclUniqueId*, NcclResult>)Export("ncclGetUniqueId");
    public static readonly delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, NcclResult> CommInitRank = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, NcclResult>)Export("ncclCommInitRank");
    public static readonly delegate* unmanaged<IntPtr, int, int, IntPtr*, IntPtr, NcclResult> CommSplit = (delegate* unmanaged<IntPtr, int, int, IntPtr*, IntPtr, NcclResult>)Export("ncclCommSplit");
    public static readonly delegate* unmanaged<IntPtr, int*, NcclResult> CommUserRank = (delegate* unmanaged<IntPtr, int*, NcclResult>)Export("ncclCommUserRank");
    public static readonly delegate* unmanaged<IntPtr, int*, NcclResult> CommCount = (delegate* unmanaged<IntPtr, int*, NcclResult>)Export("ncclCommCount");
    public static readonly delegate* unmanaged<IntPtr, NcclResult> CommDestroy = (delegate* unmanaged<IntPtr, NcclResult>)Export("ncclCommDestroy");
    public static readonly delegate* unmanaged<IntPtr, NcclResult> CommAbort = (delegate* unmanaged<IntPtr, NcclResult>)Export("ncclCommAbort");
    public static readonly delegate* unmanaged<IntPtr, NcclResult*, NcclResult> CommGetAsyncError = (delegate* unmanaged<IntPtr, NcclResult*, NcclResult>)Export("ncclCommGetAsyncError");
    public static readonly delegate* unmanaged<NcclResult, IntPtr> GetErrorString = (delegate* unmanaged<NcclResult, IntPtr>)Export("ncclGetErrorString");
    public static readonly delegate* unmanaged<IntPtr, IntPtr> GetLastError = (delegate* unmanaged<IntPtr, IntPtr>)Export("ncclGetLastError");
    public static readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult> AllReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult>)Export("ncclAllReduce");
    public static readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, IntPtr, IntPtr, NcclResult> AllGather = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, IntPtr, IntPtr, NcclResult>)Export("ncclAllGather");
    public static readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult> ReduceScatter = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult>)Export("ncclReduceScatter");
    public static readonly delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult> Broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult>)Export("ncclBroadcast");
    public static readonly delegate* unmanaged<IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult> Send = (delegate* unmanaged<IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult>)Export("ncclSend");
    public static readonly delegate* unmanaged<IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult> Recv = (delegate* unmanaged<IntPtr, nuint, NcclDataType, int, IntPtr, IntPtr, NcclResult>)Export("ncclRecv");
    public static readonly delegate* unmanaged<NcclResult> GroupStart = (delegate* unmanaged<NcclResult>)Export("ncclGroupStart");
    public static readonly delegate* unmanaged<NcclResult> GroupEnd = (delegate* unmanaged<NcclResult>)Export("ncclGroupEnd");

    /// <summary>NCCL's version code (e.g. 22809 for 2.28.9).</summary>
    public static int Version()
    {
        int v;
        Check(GetVersion(&v), "ncclGetVersion", IntPtr.Zero);
        return v;
    }

    /// <summary>Throws with NCCL's own description (and the communicator's last error) when <paramref name="result"/> is not success.</summary>
    public static void Check(NcclResult result, string call, IntPtr comm)
    {
        if (result == NcclResult.Success) return;
        string text = Marshal.PtrToStringAnsi(GetErrorString(result)) ?? result.ToString();
        string detail = Marshal.PtrToStringAnsi(GetLastError(comm)) ?? "";
        throw new CommunicatorException($"{call} failed: {text}{(detail.Length > 0 ? $" ({detail})" : "")}.");
    }

    private static IntPtr Load()
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("HARNESS_NCCL") is { Length: > 0 } given)
            candidates.Add(Directory.Exists(given) ? Path.Combine(given, "libnccl.so.2") : given);
        candidates.Add("libnccl.so.2");
        foreach (var c in candidates)
            if (NativeLibrary.TryLoad(c, out var handle)) return handle;
        throw new CommunicatorException(
            $"NCCL (libnccl.so.2) was not found (tried {string.Join(", ", candidates)}); set HARNESS_NCCL to its file or folder, or use --device cpu.");
    }
}
