using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Harness.Executor.Native;

/// <summary>One reading of the CUDA caching allocator: what torch.cuda.memory_allocated / max_memory_allocated /
/// memory_reserved / max_memory_reserved report, and the allocator's retries (a cudaMalloc that failed, the cache freed,
/// and tried again: fragmentation's cost) and out-of-memory errors.</summary>
public readonly record struct AllocatorReading(long Allocated, long AllocatedPeak, long Reserved, long ReservedPeak, long Retries, long OutOfMemory);

/// <summary>
/// PyTorch's caching-allocator statistics for a process that TorchSharp runs, which binds none: the peak allocated bytes
/// are what Megatron's memory report and Megatron-Kwai's Figure 7 list (torch.cuda.max_memory_allocated), and what the
/// simulator's memory model predicts; NVML's used bytes also count the CUDA context and the allocator's cached reserve.
/// libtorch exports the statistics only as inline C++ (c10/cuda/CUDACachingAllocator.h), so a shim of two C functions
/// (allocator_stats.cpp, embedded) is compiled once against the headers of the PyTorch installation the process loaded
/// libtorch from, with nvcc or a C++ compiler, cached by its source and that installation,
/// and loaded. Where no compiler or no headers are found the readings are null and <see cref="Unavailable"/> says why.
/// </summary>
public static unsafe class CachingAllocatorStats
{
    private const string ResourceName = "Harness.Executor.Native.allocator_stats.cpp";

    private sealed record Shim(IntPtr Stats, IntPtr ResetPeaks);

    private static readonly Lazy<(Shim? Shim, string? Why)> Loaded = new(Load);

    /// <summary>Why the statistics cannot be read in this process (null when they can, or before CUDA is initialized).</summary>
    public static string? Unavailable => TorchRuntime.LibtorchDirectory is null ? null : Loaded.Value.Why;

    /// <summary>The allocator's statistics for CUDA device <paramref name="device"/>, or null where they cannot be read.</summary>
    public static AllocatorReading? Read(int device)
    {
        if (Loaded.Value.Shim is not Shim shim) return null;
        var v = stackalloc long[6];
        if (((delegate* unmanaged<int, long*, int>)shim.Stats)(device, v) != 0) return null;
        return new AllocatorReading(v[0], v[1], v[2], v[3], v[4], v[5]);
    }

    /// <summary>torch.cuda.reset_peak_memory_stats: the peaks restart from what is allocated now. Whether it could.</summary>
    public static bool ResetPeaks(int device) =>
        Loaded.Value.Shim is Shim shim && ((delegate* unmanaged<int, int>)shim.ResetPeaks)(device) == 0;

    private static (Shim?, string?) Load()
    {
        string? lib = TorchRuntime.LibtorchDirectory;
        if (lib is null || !File.Exists(Path.Combine(lib, "libc10_cuda.so")))
            return (null, "the loaded libtorch has no CUDA allocator (libc10_cuda.so)");
        string include = Path.GetFullPath(Path.Combine(lib, "..", "include"));
        if (!File.Exists(Path.Combine(include, "c10", "cuda", "CUDACachingAllocator.h")))
            return (null, $"PyTorch's C++ headers are not beside its libraries ({include} lacks c10/cuda/CUDACachingAllocator.h)");
        string source = Source();
        // Named by the source and the installation it compiles against (its folder and libc10_cuda.so's size and time).
        var c10 = new FileInfo(Path.Combine(lib, "libc10_cuda.so"));
        string key = $"{source}\n{lib}\n{c10.Length}\n{c10.LastWriteTimeUtc.Ticks}";
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..16].ToLowerInvariant();
        string dir = Path.Combine(TorchRuntime.CacheRoot(), "allocator-stats", hash);
        string target = Path.Combine(dir, "libharness_allocator_stats.so");
        if (!File.Exists(target))
        {
            Directory.CreateDirectory(dir);
            string cpp = Path.Combine(dir, "allocator_stats.cpp");
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
                return (null, errors.Count == 0 ? "no nvcc or C++ compiler was found to build the allocator-statistics shim"
                    : $"the allocator-statistics shim did not compile ({string.Join("; ", errors)})");
            File.Move(temp, target, overwrite: true);
        }
        if (!NativeLibrary.TryLoad(target, out var handle)) return (null, $"{target} did not load");
        return (new Shim(NativeLibrary.GetExport(handle, "harness_allocator_stats"), NativeLibrary.GetExport(handle, "harness_allocator_reset_peaks")), null);
    }

    /// <summary>nvcc (which knows its CUDA headers), then the system's C++ compiler with the CUDA headers of CUDA_HOME or of
    /// PyTorch's wheels (nvidia/cuda_runtime/include beside torch).</summary>
    private static IEnumerable<(string Compiler, string[] Args)> Compilers(string include, string lib, string cpp, string output)
    {
        string[] common = ["-std=c++17", "-O2", "-shared", $"-I{include}", cpp, $"-L{lib}", "-lc10_cuda", "-lc10", "-o", output];
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
            ?? throw new InvalidOperationException("the allocator-statistics shim's source is not embedded in Harness.Executor.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
