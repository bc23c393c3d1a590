using TorchSharp;

namespace Harness.Executor.Native;

/// <summary>
/// TorchScript's graph optimizer, which libtorch switches per thread (torch::jit::setGraphExecutorOptimize, a
/// thread_local flag that TorchSharp does not bind). With it on, a scripted function's first call runs its operators
/// one by one while profiling them, and later calls run a specialized graph whose gradients come from TorchScript's
/// symbolic derivatives instead of each operator's own backward. On the CPU the two disagree in the last bits (the
/// executor's RMSNorm, rotary, attention and SwiGLU chain, float32: gradients 2.9e-4 apart after the first call; bf16:
/// a whole bf16 step), so a result would depend on how many calls, on any thread, came before: concurrent in-process
/// ranks and repeated runs in one process would not be reproducible. On the CPU the optimizer is therefore off (there
/// is no CPU fuser to lose: libtorch fuses only on GPUs by default); on a GPU it stays on, for NNC's fused kernels.
/// Where the symbol is missing (another libtorch build), nothing changes.
/// </summary>
internal static unsafe class GraphExecutorOptimization
{
    private static readonly Lazy<IntPtr> Setter = new(() => TorchRuntime.Export("torch_cpu", "_ZN5torch3jit24setGraphExecutorOptimizeEb"));

    /// <summary>The state this thread last set (null: libtorch's default, on).</summary>
    [ThreadStatic] private static bool? _on;

    /// <summary>Sets the calling thread's optimizer for a scripted call on <paramref name="device"/>: off on the CPU, on elsewhere.</summary>
    public static void For(DeviceType device)
    {
        bool on = device != DeviceType.CPU;
        if ((_on ?? true) == on) return;
        if (Setter.Value == IntPtr.Zero) return;
        ((delegate* unmanaged<byte, void>)Setter.Value)(on ? (byte)1 : (byte)0);
        _on = on;
    }
}
