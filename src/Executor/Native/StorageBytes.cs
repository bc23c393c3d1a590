using System.Runtime.InteropServices;
using TorchSharp;

namespace Harness.Executor.Native;

/// <summary>
/// Frees and reallocates the memory under a tensor without touching the tensor, its views or autograd's record of them:
/// PyTorch FSDP's _free_storage / _alloc_storage (torch/distributed/utils.py: the tensor's storage resized to 0 and back),
/// which TorchSharp does not bind. Every view of the tensor (the parameters of a ZeRO 3 gather unit) and every tensor
/// autograd saved from them share the one storage, so freeing it frees the weights for real, and refilling it before
/// backward gives backward the weights again; libtorch's version counters are not bumped, as nothing was written through a
/// tensor. The storage is reached through libtorch's own resize_bytes_cpu / resize_bytes_cuda
/// (aten/src/ATen/native/Resize.cpp, cuda/Resize.cpp); the StorageImpl comes from the tensor's TensorImpl, whose first member
/// after intrusive_ptr_target's reference counts is its Storage (c10/core/TensorImpl.h), and that reading is checked against
/// TorchSharp's THSStorage_data_ptr before it is trusted. Activation offload (Offload/ChunkOffload.cs) empties the storages of
/// the activations autograd saved the same way.
/// </summary>
public static unsafe class StorageBytes
{
    /// <summary>Where a TensorImpl keeps its Storage: after the vtable pointer and the two 32-bit reference counts.</summary>
    private const int StorageOffset = 16;

    private static readonly Lazy<IntPtr> DataPtr = new(() => Bridge("THSStorage_data_ptr"));
    private static readonly Lazy<IntPtr> NBytes = new(() => Bridge("THSStorage_nbytes"));
    private static readonly Lazy<IntPtr> ResizeCpu = new(() => Libtorch("torch_cpu", "_ZN2at6native16resize_bytes_cpuEPN3c1011StorageImplEm"));
    private static readonly Lazy<IntPtr> ResizeCuda = new(() => Libtorch("torch_cuda", "_ZN2at6native17resize_bytes_cudaEPN3c1011StorageImplEm"));

    /// <summary>Bytes the tensor's storage holds now.</summary>
    public static long Of(torch.Tensor t)
    {
        long bytes = (long)((delegate* unmanaged<IntPtr, nuint>)NBytes.Value)(t.Handle);
        GC.KeepAlive(t); // a caller's bare temporary would otherwise be finalizable once its handle is read
        return bytes;
    }

    /// <summary>The address of the storage the tensor views (its offset 0): which tensors share one.</summary>
    public static IntPtr Base(torch.Tensor t)
    {
        var data = ((delegate* unmanaged<IntPtr, IntPtr>)DataPtr.Value)(t.Handle);
        GC.KeepAlive(t); // as in Of
        return data;
    }

    /// <summary>A tensor of the whole storage of <paramref name="t"/> (its elements from offset 0, flat) with a version counter
    /// of its own: what is written through it after a <see cref="Resize"/> back bumps no counter autograd checks the saved
    /// tensors against (libtorch's set_ gives a fresh tensor another's storage).</summary>
    public static torch.Tensor Handle(torch.Tensor t)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var whole = t.detach().as_strided([Of(t) / t.ElementSize], [1], 0);
        return torch.empty(0, t.dtype, t.device).set_(whole).MoveToOuterDisposeScope();
    }

    /// <summary>Resizes the tensor's storage to <paramref name="bytes"/>: 0 frees its memory; the tensor's whole size makes it usable
    /// again, with undefined contents. Throws when this libtorch's layout is not the one expected.</summary>
    public static void Resize(torch.Tensor t, long bytes)
    {
        var resize = t.device_type == DeviceType.CUDA ? ResizeCuda.Value : ResizeCpu.Value;
        var tensorImpl = *(IntPtr*)t.Handle; // at::Tensor is one intrusive_ptr<TensorImpl>
        var storageImpl = *(IntPtr*)(tensorImpl + StorageOffset);
        // A StorageImpl starts like a TensorImpl (intrusive_ptr_target), then its DataPtr, whose first member is the data pointer.
        var data = *(IntPtr*)(storageImpl + StorageOffset);
        if (data != ((delegate* unmanaged<IntPtr, IntPtr>)DataPtr.Value)(t.Handle))
            throw new InvalidOperationException("this libtorch does not lay out TensorImpl as c10/core/TensorImpl.h does; neither ZeRO 3 nor activation offload can free memory.");
        if (t.device_type == DeviceType.CUDA && LibtorchShim.Export("harness_resize_storage_cuda") is IntPtr caught)
        {
            // Through the shim: an allocation that fails comes back as the exception libtorch's operators raise, which the run
            // reports as out of memory, where the direct call would end the process in std::terminate.
            const int capacity = 1024;
            byte* error = stackalloc byte[capacity];
            if (((delegate* unmanaged<IntPtr, ulong, byte*, int, int>)caught)(storageImpl, (ulong)bytes, error, capacity) != 0)
                throw new ExternalException($"resizing a storage to {bytes} bytes: {Marshal.PtrToStringUTF8((IntPtr)error)}");
        }
        else ((delegate* unmanaged<IntPtr, nuint, void>)resize)(storageImpl, (nuint)bytes);
        if (Of(t) != bytes) throw new InvalidOperationException($"resizing a storage to {bytes} bytes left {Of(t)}; neither ZeRO 3 nor activation offload can free memory.");
    }

    private static IntPtr Bridge(string symbol) => Libtorch("LibTorchSharp", symbol);

    private static IntPtr Libtorch(string library, string symbol)
    {
        var address = TorchRuntime.Export(library, symbol);
        return address != IntPtr.Zero ? address : throw new NativeLoadException($"lib{library}.so does not export {symbol}; neither ZeRO 3 nor activation offload can free memory with this libtorch.");
    }
}
