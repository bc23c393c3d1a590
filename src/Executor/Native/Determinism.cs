namespace Harness.Executor.Native;

/// <summary>
/// Megatron-LM's --deterministic-mode as libtorch holds it: torch.use_deterministic_algorithms(True, warn_only=False) and
/// torch.backends.cudnn.deterministic = True, the at::Context switches setDeterministicAlgorithms and setDeterministicCuDNN
/// (<see cref="AtContext"/>). With them on, an operator without a deterministic implementation throws instead of running, libtorch's
/// scaled_dot_product_attention no longer chooses cuDNN's fused attention (sdp_utils.cpp, check_cudnn_deterministic), and
/// its flash kernel's backward accumulates dQ in a fixed order. Every run sets it, so none inherits another's.
/// </summary>
public static unsafe class Determinism
{
    private static readonly Lazy<IntPtr> SetAlgorithms = new(() => Libtorch("_ZN2at7Context26setDeterministicAlgorithmsEbb"));
    private static readonly Lazy<IntPtr> SetCuDnn = new(() => Libtorch("_ZN2at7Context21setDeterministicCuDNNEb"));
    private static readonly Lazy<IntPtr> Algorithms = new(() => Libtorch("_ZNK2at7Context23deterministicAlgorithmsEv"));

    /// <summary>cuBLAS's reproducibility setting, which libtorch requires under deterministic algorithms (its
    /// alertCuBLASConfigNotDeterministic): a fixed workspace per handle, read before the first GEMM.</summary>
    public const string CuBlasWorkspaceVariable = "CUBLAS_WORKSPACE_CONFIG";
    public const string CuBlasWorkspace = ":4096:8";

    /// <summary>Turns deterministic algorithms on or off for the whole process (off raises no error where a kernel is not).</summary>
    public static void Set(bool on)
    {
        ((delegate* unmanaged<IntPtr, byte, byte, void>)SetAlgorithms.Value)(AtContext.Instance, on ? (byte)1 : (byte)0, 0);
        ((delegate* unmanaged<IntPtr, byte, void>)SetCuDnn.Value)(AtContext.Instance, on ? (byte)1 : (byte)0);
    }

    /// <summary>Whether libtorch runs deterministic algorithms only, as it reads its switch.</summary>
    public static bool On => ((delegate* unmanaged<IntPtr, byte>)Algorithms.Value)(AtContext.Instance) != 0;

    private static IntPtr Libtorch(string symbol) => AtContext.Member(symbol, "--deterministic-mode cannot be set with this libtorch.");
}
