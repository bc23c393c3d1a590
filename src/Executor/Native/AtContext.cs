namespace Harness.Executor.Native;

/// <summary>
/// libtorch's process-wide at::Context (aten/src/ATen/Context.h), whose switches TorchSharp does not bind: its member
/// functions are exports of libtorch_cpu, called through their Itanium-mangled names with the Context that
/// at::globalContext() returns as the implicit this.
/// </summary>
internal static unsafe class AtContext
{
    private static readonly Lazy<IntPtr> Global = new(() =>
        ((delegate* unmanaged<IntPtr>)Member("_ZN2at13globalContextEv", "the executor cannot reach libtorch's global context."))());

    /// <summary>The Context every member function takes as this.</summary>
    public static IntPtr Instance => Global.Value;

    /// <summary>The address of <paramref name="symbol"/>; throws, naming what cannot be done (<paramref name="without"/>), where
    /// this libtorch does not export it.</summary>
    public static IntPtr Member(string symbol, string without)
    {
        var address = TorchRuntime.Export("torch_cpu", symbol);
        return address != IntPtr.Zero ? address : throw new NativeLoadException($"libtorch_cpu.so does not export {symbol}; {without}");
    }
}
