using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Harness.Simulator.Specs;
using TorchSharp;

namespace Harness.Executor.Native;

/// <summary>A native library could not be loaded; the message is one sentence for the user.</summary>
public sealed class NativeLoadException(string message) : Exception(message);

/// <summary>
/// Loads libtorch and TorchSharp's native bridge (libLibTorchSharp.so) before TorchSharp's own loader runs,
/// by full path, and answers TorchSharp's DllImports with those handles.
/// - CPU: the libtorch of the TorchSharp-cpu package next to the program, or an existing PyTorch's.
/// - CUDA: an existing PyTorch installation's torch/lib (found with python3, or given with --libtorch DIR);
///   the GPU bundle carries no libtorch of its own.
/// When the bridge needs a libstdc++ newer than the machine's (see <see cref="ElfVersionNeeds"/>), a copy with
/// that requirement marked weak is written to a cache folder and loaded instead.
/// </summary>
public static class TorchRuntime
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, IntPtr> Loaded = new(StringComparer.Ordinal);
    private static string? _description;

    /// <summary>The folder libtorch was loaded from (null before <see cref="Initialize"/>): its neighbours hold the CUDA
    /// libraries PyTorch's wheels ship, NVRTC among them.</summary>
    public static string? LibtorchDirectory { get; private set; }

    /// <summary>libtorch libraries in dependency order (each after the ones it links to).</summary>
    private static readonly string[] CpuLibraries = { "libc10.so", "libtorch_cpu.so", "libtorch.so" };
    private static readonly string[] CudaLibraries = { "libc10.so", "libc10_cuda.so", "libtorch_cpu.so", "libtorch_cuda.so", "libtorch.so" };

    /// <summary>Versions of libstdc++ that the bridge asks for but never uses (GPU.md).</summary>
    private static readonly HashSet<string> UnusedVersions = new(StringComparer.Ordinal) { "GLIBCXX_3.4.32" };

    /// <summary>Variable naming a libtorch folder, the same as --libtorch.</summary>
    public const string LibtorchVariable = "HARNESS_LIBTORCH";

    /// <summary>
    /// Makes TorchSharp usable on the device; idempotent. Returns a line saying which libtorch was loaded.
    /// Throws <see cref="NativeLoadException"/> with a sentence for the user when it cannot.
    /// </summary>
    public static string Initialize(ExecutionDevice device = ExecutionDevice.Cpu, string? libtorchDir = null)
    {
        lock (Gate)
        {
            // A process holds one libtorch: a folder named after it is loaded is refused, not silently replaced by it.
            if (_description is not null && libtorchDir is not null && Path.GetFullPath(libtorchDir) != Path.GetFullPath(LibtorchDirectory!))
                throw new NativeLoadException($"--libtorch {libtorchDir}: this process already loaded libtorch from {LibtorchDirectory}; start a new process to use another.");
            if (_description is null)
            {
                libtorchDir ??= Environment.GetEnvironmentVariable(LibtorchVariable) is { Length: > 0 } v ? v : null;
                string dir = device == ExecutionDevice.Cuda
                    ? libtorchDir ?? PythonTorchLib() ?? throw new NativeLoadException(
                        "--device cuda needs libtorch with CUDA: no PyTorch was found through python3 (import torch); install PyTorch or pass --libtorch DIR (the folder holding libtorch_cuda.so).")
                    : libtorchDir ?? BundledDir("libtorch_cpu.so") ?? PythonTorchLib() ?? throw new NativeLoadException(
                        "No CPU libtorch was found: this build carries no TorchSharp-cpu libraries and python3 has no PyTorch; pass --libtorch DIR (a folder holding libtorch_cpu.so).");
                var libraries = device == ExecutionDevice.Cuda ? CudaLibraries : CpuLibraries;
                foreach (var name in libraries) LoadFrom(dir, name, device);
                LibtorchDirectory = dir;
                string bridge = LoadBridge();
                NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, Resolve);
                _description = $"libtorch from {dir}; bridge {bridge}";
            }
            InitializeDevice(device);
            return _description;
        }
    }

    private static void InitializeDevice(ExecutionDevice device)
    {
        if (device == ExecutionDevice.Cpu)
        {
            torch.InitializeDeviceType(DeviceType.CPU);
            return;
        }
        if (!Loaded.ContainsKey("torch_cuda"))
            throw new NativeLoadException("--device cuda was asked for after a CPU-only libtorch was loaded in this process; start a new process.");
        try { torch.InitializeDeviceType(DeviceType.CUDA); }
        catch (Exception e) { throw new NativeLoadException($"libtorch loaded but CUDA did not initialize ({e.Message.Split('\n')[0]}); check that this machine has an NVIDIA GPU and driver."); }
        if (!torch.cuda.is_available())
            throw new NativeLoadException("--device cuda was asked for but libtorch sees no CUDA device on this machine; use --device cpu.");
    }

    /// <summary>The address of <paramref name="symbol"/> in the loaded libtorch library <paramref name="library"/> (its stem,
    /// e.g. "torch_cpu"), or zero when that library was not loaded here or does not export it.</summary>
    internal static IntPtr Export(string library, string symbol)
    {
        lock (Gate)
            return Loaded.TryGetValue(library, out var handle) && NativeLibrary.TryGetExport(handle, symbol, out var address) ? address : IntPtr.Zero;
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        Loaded.TryGetValue(Stem(name), out var handle) ? handle : IntPtr.Zero;

    /// <summary>"libtorch_cpu.so", "torch_cpu" and "LibTorchSharp" map to one key each.</summary>
    private static string Stem(string name)
    {
        var s = Path.GetFileName(name);
        if (s.EndsWith(".so", StringComparison.Ordinal)) s = s[..^3];
        if (s.StartsWith("lib", StringComparison.Ordinal) && s != "libLibTorchSharp") s = s[3..];
        return s == "libLibTorchSharp" ? "LibTorchSharp" : s;
    }

    private static void LoadFrom(string dir, string file, ExecutionDevice device)
    {
        string path = Path.Combine(dir, file);
        if (!File.Exists(path))
            throw new NativeLoadException(device == ExecutionDevice.Cuda
                ? $"The libtorch folder {dir} has no {file}; pass --libtorch DIR with a CUDA build of libtorch (PyTorch's torch/lib)."
                : $"The libtorch folder {dir} has no {file}; pass --libtorch DIR with a libtorch build (PyTorch's torch/lib).");
        if (!TryLoad(path, out var handle, out var error))
            throw new NativeLoadException($"{path} did not load: {error}.");
        Loaded[Stem(file)] = handle;
    }

    /// <summary>Loads libLibTorchSharp.so as shipped, or a copy with its unused libstdc++ requirement made weak.</summary>
    private static string LoadBridge()
    {
        const string file = "libLibTorchSharp.so";
        string original = BundledDir(file) ?? throw new NativeLoadException(
            $"{file} (TorchSharp's native bridge) is not next to the program; rebuild or republish the harness.");
        original = Path.Combine(original, file);
        if (TryLoad(original, out var handle, out var firstError))
        {
            Loaded["LibTorchSharp"] = handle;
            return original;
        }
        string patched = PatchedCopy(original, firstError);
        if (!TryLoad(patched, out handle, out var error))
            throw new NativeLoadException($"{file} did not load ({firstError}), nor did its patched copy {patched} ({error}).");
        Loaded["LibTorchSharp"] = handle;
        return $"{patched} (GLIBCXX_3.4.32 marked weak)";
    }

    /// <summary>Writes (once, atomically) the patched bridge into the cache folder, named by the original's hash.</summary>
    private static string PatchedCopy(string original, string loadError)
    {
        byte[] bytes = File.ReadAllBytes(original);
        string hash = Convert.ToHexString(SHA256.HashData(bytes))[..16].ToLowerInvariant();
        string dir = Path.Combine(CacheRoot(), "native", hash);
        string target = Path.Combine(dir, Path.GetFileName(original));
        if (File.Exists(target)) return target;
        if (ElfVersionNeeds.MarkWeak(bytes, UnusedVersions) == 0)
            throw new NativeLoadException($"{original} did not load and has no GLIBCXX_3.4.32 requirement to relax: {loadError}.");
        Directory.CreateDirectory(dir);
        string temp = $"{target}.{Environment.ProcessId}.tmp";
        File.WriteAllBytes(temp, bytes);
        File.Move(temp, target, overwrite: true);
        return target;
    }

    internal static string CacheRoot()
    {
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(!string.IsNullOrEmpty(xdg) ? xdg : !string.IsNullOrEmpty(home) ? Path.Combine(home, ".cache") : Path.GetTempPath(), "harness");
    }

    /// <summary>The folder next to the program (or under its runtimes/linux-x64/native) that holds the file, if any.</summary>
    private static string? BundledDir(string file)
    {
        var candidates = new List<string> { AppContext.BaseDirectory, Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native") };
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string dirs)
            candidates.AddRange(dirs.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
        return candidates.FirstOrDefault(d => File.Exists(Path.Combine(d, file)));
    }

    /// <summary>torch/lib of the PyTorch that `python3` imports, or null.</summary>
    private static string? PythonTorchLib()
    {
        try
        {
            var psi = new ProcessStartInfo("python3", new[] { "-c", "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))" })
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            using var p = Process.Start(psi);
            if (p is null) return null;
            string output = p.StandardOutput.ReadToEnd().Trim();
            p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 && Directory.Exists(output) ? output : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; } // no python3 on PATH
    }

    /// <summary>NativeLibrary.Load by full path, keeping the dynamic loader's message when it fails.</summary>
    private static bool TryLoad(string path, out IntPtr handle, out string error)
    {
        try
        {
            handle = NativeLibrary.Load(path);
            error = "";
            return true;
        }
        catch (DllNotFoundException e)
        {
            handle = IntPtr.Zero;
            error = e.Message.Trim().TrimEnd('.');
            return false;
        }
    }
}
