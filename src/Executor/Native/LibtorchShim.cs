using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Harness.Executor.Native;

/// <summary>
/// The parts of libtorch's C++ API the executor needs and TorchSharp does not bind (the caching allocator's statistics, the
/// autograd engine's thread-local multithreading switch, a storage resize whose C++ exceptions are caught), which libtorch exports only as C++ (inline functions, classes):
/// a shim of C functions (libtorch_shim.cpp, embedded) compiled once against the headers of the PyTorch installation the
/// process loaded libtorch from, with nvcc or a C++ compiler, cached by its source and that installation, and loaded.
/// Where no compiler or no headers are found, <see cref="Export"/> gives null and <see cref="Unavailable"/> says why.
/// </summary>
public static class LibtorchShim
{
    private const string ResourceName = "Harness.Executor.Native.libtorch_shim.cpp";

    private static readonly Lazy<(IntPtr Handle, string? Why)> Loaded = new(Load);

    /// <summary>Why the shim cannot be used in this process (null when it can, or before libtorch is loaded).</summary>
    public static string? Unavailable => TorchRuntime.LibtorchDirectory is null ? null : Loaded.Value.Why;

    /// <summary>The shim's C function <paramref name="name"/>, or null where the shim could not be built.</summary>
    public static IntPtr? Export(string name) => Loaded.Value.Handle == IntPtr.Zero ? null : NativeLibrary.GetExport(Loaded.Value.Handle, name);

    private static (IntPtr Handle, string? Why) Load()
    {
        string? lib = TorchRuntime.LibtorchDirectory;
        if (lib is null || !File.Exists(Path.Combine(lib, "libc10_cuda.so")))
            return (IntPtr.Zero, "the loaded libtorch has no CUDA libraries (libc10_cuda.so)");
        string include = Path.GetFullPath(Path.Combine(lib, "..", "include"));
        if (!File.Exists(Path.Combine(include, "c10", "cuda", "CUDACachingAllocator.h")))
            return (IntPtr.Zero, $"PyTorch's C++ headers are not beside its libraries ({include} lacks c10/cuda/CUDACachingAllocator.h)");
        string source = Source();
        // Named by the source and the installation it compiles against (its folder and libc10_cuda.so's size and time).
        var c10 = new FileInfo(Path.Combine(lib, "libc10_cuda.so"));
        string key = $"{source}\n{lib}\n{c10.Length}\n{c10.LastWriteTimeUtc.Ticks}";
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..16].ToLowerInvariant();
        string dir = Path.Combine(TorchRuntime.CacheRoot(), "libtorch-shim", hash);
        string target = Path.Combine(dir, "libharness_libtorch_shim.so");
        if (!File.Exists(target))
        {
            Directory.CreateDirectory(dir);
            string cpp = Path.Combine(dir, "libtorch_shim.cpp");
            File.WriteAllText(cpp, source);
            string temp = $"{target}.{Environment.ProcessId}.tmp";
            var errors = new List<string>();
            foreach (var (compiler, args) in Compilers(include, lib, cpp, temp))
            {
                string? error = Compile(compiler, args);
                if (error is null) break;
                errors.Add($"{Path.GetFileName(compiler)}: {error}");
            }
            if (!File.Exists(temp))
                return (IntPtr.Zero, errors.Count == 0 ? "no nvcc or C++ compiler was found to build the libtorch shim"
                    : $"the libtorch shim did not compile ({string.Join("; ", errors)})");
            File.Move(temp, target, overwrite: true);
        }
        return NativeLibrary.TryLoad(target, out var handle) ? (handle, null) : (IntPtr.Zero, $"{target} did not load");
    }

    /// <summary>nvcc (which knows its CUDA headers), then the system's C++ compiler with the CUDA headers of CUDA_HOME or of
    /// PyTorch's wheels (nvidia/cuda_runtime/include beside torch).</summary>
    private static IEnumerable<(string Compiler, string[] Args)> Compilers(string include, string lib, string cpp, string output)
    {
        string[] common = ["-std=c++17", "-O2", "-shared", $"-I{include}", cpp, $"-L{lib}", "-ltorch_cuda", "-lc10_cuda", "-lc10", "-o", output];
        string? cudaHome = Environment.GetEnvironmentVariable("CUDA_HOME") is { Length: > 0 } h ? h : null;
        var nvccs = new[] { OnPath("nvcc"), cudaHome is null ? null : Path.Combine(cudaHome, "bin", "nvcc"), "/usr/local/cuda/bin/nvcc" };
        foreach (var nvcc in nvccs.Where(File.Exists).Distinct())
            yield return (nvcc!, ["-Xcompiler", "-fPIC", .. common]);
        string sitePackages = Path.GetFullPath(Path.Combine(lib, "..", ".."));
        var cudaIncludes = new[] { cudaHome is null ? null : Path.Combine(cudaHome, "include"), "/usr/local/cuda/include" }
            .Concat(Directory.Exists(Path.Combine(sitePackages, "nvidia"))
                ? Directory.EnumerateDirectories(Path.Combine(sitePackages, "nvidia")).Select(d => Path.Combine(d, "include")) : [])
            .Where(d => d is not null && File.Exists(Path.Combine(d, "cuda_runtime_api.h"))).ToList();
        foreach (var cxx in new[] { OnPath("c++"), OnPath("g++"), OnPath("clang++") }.Where(File.Exists).Distinct())
            if (cudaIncludes.Count > 0)
                yield return (cxx!, ["-fPIC", $"-I{cudaIncludes[0]}", .. common]);
    }

    private static string? OnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    /// <summary>Runs the compiler; null when it made the library, else its first error line.</summary>
    private static string? Compile(string compiler, string[] args)
    {
        var psi = new ProcessStartInfo(compiler, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var p = Process.Start(psi);
        if (p is null) return "did not start";
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode == 0 && File.Exists(args[^1])) return null;
        string first = stderr.Result.Split('\n').FirstOrDefault(l => l.Contains("error", StringComparison.OrdinalIgnoreCase)) ?? stderr.Result.Split('\n')[0];
        return $"exit {p.ExitCode}: {first.Trim()}";
    }

    private static string Source()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException("the libtorch shim's source is not embedded in Harness.Executor.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
