using System.Reflection;
using Harness.Executor.Native;
using Harness.Executor.Native.Cuda;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// One module of the executor's own CUDA kernels: bf16.cuh followed by its sources (all embedded in Harness.Executor),
/// compiled by NVRTC per device on first use (<see cref="CudaModule"/>), and the launch conventions its entry points share.
/// Each module is probed on its own, so one that fails to compile leaves the others running.
/// </summary>
internal sealed unsafe class KernelModule(string name, params string[] sources)
{
    public const int Threads = 256;
    private const uint MaxBlocks = 1u << 16;

    private readonly CudaModule module = new(name, string.Join("\n", sources.Prepend("bf16.cuh").Select(Resource)));

    /// <summary>Compiles and loads the module on <paramref name="device"/> by looking <paramref name="kernel"/> up; null when
    /// it is ready, else why not, in one sentence (no NVRTC, no driver, a compile error).</summary>
    public string? Probe(int device, string kernel)
    {
        try
        {
            module.Function(device, kernel);
            return null;
        }
        catch (Exception e) when (e is CudaException or DllNotFoundException or EntryPointNotFoundException)
        {
            return e.Message;
        }
    }

    /// <summary>8-wide (16-byte) accesses when every row starts 16-byte aligned, else one element at a time.</summary>
    public static int Vector(long rowLength, params IntPtr[] pointers) =>
        rowLength % 8 == 0 && pointers.All(p => p % 16 == 0) ? 8 : 1;

    /// <summary>Blocks of <see cref="Threads"/> for a grid-stride loop over <paramref name="units"/>.</summary>
    public static uint Blocks(long units) => (uint)Math.Clamp((units + Threads - 1) / Threads, 1, MaxBlocks);

    /// <summary>Launches <paramref name="kernel"/> on the device of <paramref name="on"/>, on the legacy default stream.</summary>
    public void Launch(Tensor on, string kernel, uint blocks, int threads, void** args) =>
        CudaDriver.Launch(module.Function(on.device_index, kernel), blocks, (uint)threads, 0, args, kernel);

    private static string Resource(string file)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream($"Harness.Executor.Fused.{file}")
            ?? throw new InvalidOperationException($"the fused kernels' source {file} is not embedded in Harness.Executor.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
