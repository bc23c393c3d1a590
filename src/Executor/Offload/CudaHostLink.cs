using Harness.Executor.Native;
using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// Copies over the GPU's host link on a stream of their own beside the compute stream (<see cref="CudaSideStream"/>), into
/// and out of page-locked host memory, so that they overlap compute: Megatron-Kwai's memcpy streams and cudaMallocHost
/// buffers (ATC'24 artifact, megatron/core/pipeline_parallel/offload.py, get_memcpy_stream, get_cpu_buffer), Transformer
/// Engine's d2h and h2d streams (cpu_offload_v1.py). <see cref="AfterCompute"/> makes the copy stream wait for the compute
/// stream, <see cref="Fence"/> the other way. libtorch's caching allocators do not see these copies, so callers keep every
/// tensor a copy touches until its fence.
/// </summary>
internal sealed unsafe class CudaHostLink(int device) : IHostLink
{
    private readonly CudaSideStream side = new(device);

    public void AfterCompute() => side.WaitForCompute();

    public Tensor ToHost(Tensor source)
    {
        using var pageable = empty(source.shape, source.dtype, CPU);
        var host = pageable.pin_memory();
        Copy(host, source);
        return host;
    }

    public Tensor ToDevice(Tensor source, Device device)
    {
        var target = empty(source.shape, source.dtype, device);
        Copy(target, source);
        return target;
    }

    private void Copy(Tensor target, Tensor source)
    {
        if (!source.is_contiguous()) throw new ArgumentException("the host link copies contiguous tensors only.", nameof(source));
        nuint bytes = (nuint)(source.NumberOfElements * source.ElementSize);
        CudaRuntime.Check(CudaRuntime.MemcpyAsync(TensorPointer.Of(target), TensorPointer.Of(source), bytes, CudaRuntime.MemcpyDefault, side.Stream), "cudaMemcpyAsync");
    }

    public void Fence() => side.JoinCompute();

    public void Dispose() => side.Dispose();
}
