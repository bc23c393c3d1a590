using System.Runtime.InteropServices;
using System.Text;

namespace Harness.Executor.Native.Cuda;

/// <summary>
/// NVRTC, CUDA's run-time compiler, turns the executor's own CUDA C++ kernels into a CUBIN for the GPU at hand, so
/// fused kernels need no compiler on the user's machine: PyTorch's CUDA wheels ship libnvrtc beside libtorch
/// (nvidia/cu13/lib, nvidia/cuda_nvrtc/lib), and CUDA toolkits have it under lib64.
/// </summary>
internal static unsafe class Nvrtc
{
    private static readonly string[] Sonames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

    private static readonly Lazy<(IntPtr Handle, string Path)> Library = new(Load);

    private static IntPtr Export(string name) => NativeLibrary.GetExport(Library.Value.Handle, name);

    /// <summary>Where NVRTC was loaded from (loads it).</summary>
    public static string Location => Library.Value.Path;

    /// <summary>NVRTC's version, e.g. "13.0".</summary>
    public static string Version
    {
        get
        {
            var version = (delegate* unmanaged<int*, int*, int>)Export("nvrtcVersion");
            int major, minor;
            version(&major, &minor);
            return $"{major}.{minor}";
        }
    }

    /// <summary>Compiles <paramref name="source"/> for sm_<paramref name="arch"/> and returns the CUBIN.</summary>
    public static byte[] CompileCubin(string source, string name, int arch)
    {
        var create = (delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int>)Export("nvrtcCreateProgram");
        var compile = (delegate* unmanaged<IntPtr, int, byte**, int>)Export("nvrtcCompileProgram");
        var logSize = (delegate* unmanaged<IntPtr, nuint*, int>)Export("nvrtcGetProgramLogSize");
        var getLog = (delegate* unmanaged<IntPtr, byte*, int>)Export("nvrtcGetProgramLog");
        var cubinSize = (delegate* unmanaged<IntPtr, nuint*, int>)Export("nvrtcGetCUBINSize");
        var getCubin = (delegate* unmanaged<IntPtr, byte*, int>)Export("nvrtcGetCUBIN");
        var destroy = (delegate* unmanaged<IntPtr*, int>)Export("nvrtcDestroyProgram");

        byte[] src = Encoding.UTF8.GetBytes(source + "\0"), file = Encoding.UTF8.GetBytes(name + "\0");
        byte[][] options = [Encoding.ASCII.GetBytes($"--gpu-architecture=sm_{arch}\0"), Encoding.ASCII.GetBytes("--std=c++17\0")];
        IntPtr program;
        fixed (byte* s = src, f = file) Check(create(&program, s, f, 0, null, null), "nvrtcCreateProgram");
        try
        {
            int status;
            fixed (byte* o0 = options[0], o1 = options[1])
            {
                byte** opts = stackalloc byte*[] { o0, o1 };
                status = compile(program, options.Length, opts);
            }
            if (status != 0)
            {
                nuint size;
                logSize(program, &size);
                var log = new byte[(int)size];
                fixed (byte* l = log) getLog(program, l);
                throw new CudaException($"NVRTC could not compile the fused kernels for sm_{arch}: {Encoding.UTF8.GetString(log).TrimEnd('\0').Trim()}");
            }
            nuint bytes;
            Check(cubinSize(program, &bytes), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)bytes];
            fixed (byte* c = cubin) Check(getCubin(program, c), "nvrtcGetCUBIN");
            return cubin;
        }
        finally
        {
            destroy(&program);
        }
    }

    private static void Check(int result, string call)
    {
        if (result == 0) return;
        var text = (delegate* unmanaged<int, IntPtr>)Export("nvrtcGetErrorString");
        throw new CudaException($"{call} failed: {Marshal.PtrToStringAnsi(text(result)) ?? $"error {result}"}.");
    }

    /// <summary>libnvrtc from PyTorch's wheel layout beside libtorch first, then the loader's search path.</summary>
    private static (IntPtr, string) Load()
    {
        var candidates = new List<string>();
        if (TorchRuntime.LibtorchDirectory is { } torchLib)
        {
            // torch/lib -> site-packages/nvidia/{cu13,cuda_nvrtc,...}/lib
            string nvidia = Path.GetFullPath(Path.Combine(torchLib, "..", "..", "nvidia"));
            if (Directory.Exists(nvidia))
                foreach (var lib in Directory.GetDirectories(nvidia).Select(d => Path.Combine(d, "lib")).Where(Directory.Exists).Order(StringComparer.Ordinal))
                    candidates.AddRange(Sonames.Select(n => Path.Combine(lib, n)).Where(File.Exists));
        }
        if (Environment.GetEnvironmentVariable("CUDA_HOME") is { Length: > 0 } home)
            candidates.AddRange(Sonames.Select(n => Path.Combine(home, "lib64", n)).Where(File.Exists));
        candidates.AddRange(Sonames);
        foreach (var c in candidates)
            if (NativeLibrary.TryLoad(c, out var handle)) return (handle, c);
        throw new CudaException($"NVRTC (libnvrtc.so.13 or .12) was not found beside libtorch, under CUDA_HOME or on the loader's path.");
    }
}
