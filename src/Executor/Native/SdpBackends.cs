namespace Harness.Executor.Native;

/// <summary>
/// Which kernels libtorch's scaled_dot_product_attention may choose from: the process-wide switches of at::Context
/// (<see cref="AtContext"/>: setSDPUseFlash, setSDPUseMemEfficient, setSDPUseMath, setSDPUseCuDNN, read back by
/// userEnabledFlashSDP and the like), which torch.backends.cuda.enable_flash_sdp and its siblings set. Every run sets all
/// four, so none inherits another's.
/// </summary>
public static unsafe class SdpBackends
{
    private static readonly Lazy<IntPtr> UseFlash = new(() => Libtorch("_ZN2at7Context14setSDPUseFlashEb"));
    private static readonly Lazy<IntPtr> UseMemEfficient = new(() => Libtorch("_ZN2at7Context21setSDPUseMemEfficientEb"));
    private static readonly Lazy<IntPtr> UseMath = new(() => Libtorch("_ZN2at7Context13setSDPUseMathEb"));
    private static readonly Lazy<IntPtr> UseCuDnn = new(() => Libtorch("_ZN2at7Context14setSDPUseCuDNNEb"));
    private static readonly Lazy<IntPtr> FlashEnabled = new(() => Libtorch("_ZNK2at7Context19userEnabledFlashSDPEv"));
    private static readonly Lazy<IntPtr> MathEnabled = new(() => Libtorch("_ZNK2at7Context18userEnabledMathSDPEv"));
    private static readonly Lazy<IntPtr> CuDnnEnabled = new(() => Libtorch("_ZNK2at7Context19userEnabledCuDNNSDPEv"));
    private static readonly Lazy<IntPtr> MemEfficientEnabled = new(() => Libtorch("_ZNK2at7Context26userEnabledMemEfficientSDPEv"));

    /// <summary>The kernels scaled_dot_product_attention may choose from (libtorch's default: all four).</summary>
    public readonly record struct Allowed(bool Flash, bool MemEfficient, bool Math, bool CuDnn)
    {
        public static Allowed All { get; } = new(true, true, true, true);
    }

    /// <summary>Allows exactly the kernels of <paramref name="allowed"/>, for the whole process.</summary>
    public static void Set(Allowed allowed)
    {
        Call(UseFlash.Value, allowed.Flash);
        Call(UseMemEfficient.Value, allowed.MemEfficient);
        Call(UseMath.Value, allowed.Math);
        Call(UseCuDnn.Value, allowed.CuDnn);
    }

    /// <summary>The kernels allowed now, as libtorch reads its switches.</summary>
    public static Allowed Current => new(Read(FlashEnabled.Value), Read(MemEfficientEnabled.Value), Read(MathEnabled.Value), Read(CuDnnEnabled.Value));

    // A C++ bool travels as one byte in the low bits of its register (System V AMD64 ABI): byte on both sides.
    private static void Call(IntPtr setter, bool on) => ((delegate* unmanaged<IntPtr, byte, void>)setter)(AtContext.Instance, on ? (byte)1 : (byte)0);

    private static bool Read(IntPtr getter) => ((delegate* unmanaged<IntPtr, byte>)getter)(AtContext.Instance) != 0;

    private static IntPtr Libtorch(string symbol) =>
        AtContext.Member(symbol, "the executor cannot choose scaled_dot_product_attention's kernel with this libtorch.");
}
