using System.Runtime.InteropServices;

namespace Harness.Executor.Native.Cuda;

/// <summary>
/// The CUDA driver API (libcuda.so.1, shipped with the NVIDIA driver) for what the runtime that libtorch uses does
/// not offer: loading a module compiled at run time and launching its kernels. Kernels are launched on the legacy
/// default stream (stream 0), where libtorch and the executor's NCCL calls run, so they are ordered with both.
/// Work runs in the device's primary context, the one the CUDA runtime (and so libtorch) uses.
/// </summary>
internal static unsafe class CudaDriver
{
    private static readonly Lazy<IntPtr> Handle = new(() =>
    {
        if (NativeLibrary.TryLoad("libcuda.so.1", out var h)) return h;
        throw new CudaException("the CUDA driver library libcuda.so.1 was not found; fused kernels need an NVIDIA driver.");
    });

    private static IntPtr Export(string name) => NativeLibrary.GetExport(Handle.Value, name);

    private static readonly Lazy<Api> Calls = new(() =>
    {
        var api = new Api
        {
            Init = (delegate* unmanaged<uint, int>)Export("cuInit"),
            DeviceGet = (delegate* unmanaged<int*, int, int>)Export("cuDeviceGet"),
            DeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)Export("cuDeviceGetAttribute"),
            CtxGetCurrent = (delegate* unmanaged<IntPtr*, int>)Export("cuCtxGetCurrent"),
            CtxSetCurrent = (delegate* unmanaged<IntPtr, int>)Export("cuCtxSetCurrent"),
            PrimaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)Export("cuDevicePrimaryCtxRetain"),
            ModuleLoadData = (delegate* unmanaged<IntPtr*, byte*, int>)Export("cuModuleLoadData"),
            ModuleGetFunction = (delegate* unmanaged<IntPtr*, IntPtr, byte*, int>)Export("cuModuleGetFunction"),
            LaunchKernel = (delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int>)Export("cuLaunchKernel"),
            GetErrorString = (delegate* unmanaged<int, byte**, int>)Export("cuGetErrorString"),
        };
        Check(api.Init(0), "cuInit", api);
        return api;
    });

    private struct Api
    {
        public delegate* unmanaged<uint, int> Init;
        public delegate* unmanaged<int*, int, int> DeviceGet;
        public delegate* unmanaged<int*, int, int, int> DeviceGetAttribute;
        public delegate* unmanaged<IntPtr*, int> CtxGetCurrent;
        public delegate* unmanaged<IntPtr, int> CtxSetCurrent;
        public delegate* unmanaged<IntPtr*, int, int> PrimaryCtxRetain;
        public delegate* unmanaged<IntPtr*, byte*, int> ModuleLoadData;
        public delegate* unmanaged<IntPtr*, IntPtr, byte*, int> ModuleGetFunction;
        public delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int> LaunchKernel;
        public delegate* unmanaged<int, byte**, int> GetErrorString;
    }

    private const int ComputeCapabilityMajor = 75, ComputeCapabilityMinor = 76;

    /// <summary>The device's compute capability, e.g. (9, 0) for Hopper.</summary>
    public static (int Major, int Minor) ComputeCapability(int device)
    {
        var api = Calls.Value;
        int dev, major, minor;
        Check(api.DeviceGet(&dev, device), "cuDeviceGet", api);
        Check(api.DeviceGetAttribute(&major, ComputeCapabilityMajor, dev), "cuDeviceGetAttribute", api);
        Check(api.DeviceGetAttribute(&minor, ComputeCapabilityMinor, dev), "cuDeviceGetAttribute", api);
        return (major, minor);
    }

    /// <summary>
    /// Makes the device's primary context current on this thread when none is: libtorch's runtime calls bind it on
    /// the threads they run on, but an autograd worker thread may not have made one yet.
    /// </summary>
    public static void EnsureContext(int device)
    {
        var api = Calls.Value;
        IntPtr current;
        Check(api.CtxGetCurrent(&current), "cuCtxGetCurrent", api);
        if (current != IntPtr.Zero) return;
        int dev;
        Check(api.DeviceGet(&dev, device), "cuDeviceGet", api);
        Check(api.PrimaryCtxRetain(&current, dev), "cuDevicePrimaryCtxRetain", api);
        Check(api.CtxSetCurrent(current), "cuCtxSetCurrent", api);
    }

    /// <summary>Loads a CUBIN image into the current context.</summary>
    public static IntPtr LoadModule(byte[] image)
    {
        var api = Calls.Value;
        IntPtr module;
        fixed (byte* p = image) Check(api.ModuleLoadData(&module, p), "cuModuleLoadData", api);
        return module;
    }

    public static IntPtr Function(IntPtr module, string name)
    {
        var api = Calls.Value;
        IntPtr function;
        byte[] bytes = System.Text.Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* p = bytes) Check(api.ModuleGetFunction(&function, module, p), $"cuModuleGetFunction({name})", api);
        return function;
    }

    /// <summary>Launches on the legacy default stream; <paramref name="args"/> points at each argument's value.</summary>
    public static void Launch(IntPtr function, uint gridX, uint blockX, uint sharedBytes, void** args, string name)
    {
        var api = Calls.Value;
        Check(api.LaunchKernel(function, gridX, 1, 1, blockX, 1, 1, sharedBytes, IntPtr.Zero, args, null), $"cuLaunchKernel({name})", api);
    }

    private static void Check(int result, string call, Api api)
    {
        if (result == 0) return;
        byte* text = null;
        string what = api.GetErrorString is not null && api.GetErrorString(result, &text) == 0 && text is not null
            ? Marshal.PtrToStringAnsi((IntPtr)text) ?? $"error {result}"
            : $"error {result}";
        throw new CudaException($"{call} failed: {what}.");
    }
}
