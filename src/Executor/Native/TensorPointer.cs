using System.Runtime.InteropServices;
using TorchSharp;

namespace Harness.Executor.Native;

/// <summary>
/// The device address of a tensor's first element, for NCCL. TorchSharp's storage&lt;T&gt;().data_ptr() copies
/// bf16 tensors first (a wrong pointer); the bridge's exported THSTensor_data returns at::Tensor::data_ptr() for
/// any dtype, storage offset included (GPU.md).
/// </summary>
internal static unsafe class TensorPointer
{
    private static readonly Lazy<IntPtr> DataFunction = new(() =>
    {
        // The bridge is loaded by then (TorchSharp is initialized), and its soname finds the loaded copy.
        if (!NativeLibrary.TryLoad("libLibTorchSharp.so", out var bridge))
            throw new CudaException("TorchSharp's native bridge (libLibTorchSharp.so) is not loaded; initialize libtorch first.");
        return NativeLibrary.GetExport(bridge, "THSTensor_data");
    });

    public static IntPtr Of(torch.Tensor tensor)
    {
        var data = (delegate* unmanaged<IntPtr, IntPtr>)DataFunction.Value;
        var pointer = data(tensor.Handle);
        GC.KeepAlive(tensor); // a caller's bare temporary would otherwise be finalizable once its handle is read
        return pointer;
    }
}
