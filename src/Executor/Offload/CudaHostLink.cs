using Harness.Executor.Native;
using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// Copies over the GPU's host link on a stream of their own, beside the compute stream (the legacy default stream the
/// executor's kernels run on), into and out of page-locked host memory, so that they overlap compute: Megatron-Kwai's
/// memcpy streams and cudaMallocHost buffers (ATC'24 artifact, megatron/core/pipeline_parallel/offload.py,
/// get_memcpy_stream, get_cpu_buffer). The order between the two streams is only what CUDA events say:
/// <see cref="AfterCompute"/> makes the copy stream wait for the compute stream, <see cref="Fence"/> the other way.
/// libtorch's caching allocators do not see these copies, so callers keep every tensor a copy touches until its fence.
/// </summary>
internal sealed unsafe class CudaHostLink : IHostLink
{
    private readonly IntPtr stream, computeReady, copiesDone;

    public CudaHostLink(int device)
    {
        CudaRuntime.Check(CudaRuntime.SetDevice(device), $"cudaSetDevice({device})");
        IntPtr s, a, b;
        CudaRuntime.Check(CudaRuntime.StreamCreateWithFlags(&s, CudaRuntime.StreamNonBlocking), "cudaStreamCreateWithFlags");
        CudaRuntime.Check(CudaRuntime.EventCreateWithFlags(&a, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        CudaRuntime.Check(CudaRuntime.EventCreateWithFlags(&b, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        (stream, computeReady, copiesDone) = (s, a, b);
    }

    public void AfterCompute()
    {
        CudaRuntime.Check(CudaRuntime.EventRecord(computeReady, IntPtr.Zero), "cudaEventRecord");
        CudaRuntime.Check(CudaRuntime.StreamWaitEvent(stream, computeReady, 0), "cudaStreamWaitEvent");
    }

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
        CudaRuntime.Check(CudaRuntime.MemcpyAsync(TensorPointer.Of(target), TensorPointer.Of(source), bytes, CudaRuntime.MemcpyDefault, stream), "cudaMemcpyAsync");
    }

    public void Fence()
    {
        CudaRuntime.Check(CudaRuntime.EventRecord(copiesDone, stream), "cudaEventRecord");
        CudaRuntime.Check(CudaRuntime.StreamWaitEvent(IntPtr.Zero, copiesDone, 0), "cudaStreamWaitEvent");
    }

    public void Dispose()
    {
        CudaRuntime.StreamSynchronize(stream);
        CudaRuntime.EventDestroy(computeReady);
        CudaRuntime.EventDestroy(copiesDone);
        CudaRuntime.StreamDestroy(stream);
    }
}
