using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace Harness.Executor.Native.Cuda;

/// <summary>
/// CUDA C++ source compiled at run time (NVRTC) and loaded per device. The CUBIN is cached under
/// ~/.cache/harness/kernels by a hash of the source, the GPU architecture and NVRTC's version, so a run compiles
/// only the first time (NVRTC takes about a second). Thread-safe: backward passes launch from autograd's threads.
/// </summary>
public sealed class CudaModule(string name, string source)
{
    private readonly ConcurrentDictionary<int, Loaded> perDevice = new();

    private sealed record Loaded(IntPtr Module, ConcurrentDictionary<string, IntPtr> Functions);

    /// <summary>The kernel <paramref name="kernel"/> (an extern "C" name) on <paramref name="device"/>, ready to launch
    /// from the calling thread.</summary>
    public IntPtr Function(int device, string kernel)
    {
        CudaDriver.EnsureContext(device);
        var loaded = perDevice.GetOrAdd(device, d => new Loaded(CudaDriver.LoadModule(Cubin(d)), new()));
        return loaded.Functions.GetOrAdd(kernel, k => CudaDriver.Function(loaded.Module, k));
    }

    private byte[] Cubin(int device)
    {
        var (major, minor) = CudaDriver.ComputeCapability(device);
        int arch = major * 10 + minor;
        string key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes($"{source}\n{arch}\n{Nvrtc.Version}")))[..16].ToLowerInvariant();
        string path = Path.Combine(TorchRuntime.CacheRoot(), "kernels", $"{name}-sm{arch}-{key}.cubin");
        if (File.Exists(path)) return File.ReadAllBytes(path);
        byte[] cubin = Nvrtc.CompileCubin(source, name + ".cu", arch);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            string temp = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllBytes(temp, cubin);
            File.Move(temp, path, overwrite: true);
        }
        catch (IOException) { } // an unwritable cache only costs the next run a compile
        catch (UnauthorizedAccessException) { }
        return cubin;
    }
}
