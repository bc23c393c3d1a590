using Harness.Executor.Native;
using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// Copies over the GPU's host link on a stream of their own beside the compute stream (<see cref="CudaSideStream"/>), into
/// and out of page-locked host memory, so that they overlap compute: Megatron-Kwai's memcpy streams and cudaMallocHost
/// buffers (ATC'24 artifact, megatron/core/pipeline_parallel/offload.py, get_memcpy_stream, get_cpu_buffer), Transformer
/// Engine's d2h and h2d streams (cpu_offload_v1.py). <see cref="AfterCompute"/> makes the copy stream wait for the compute
/// stream, <see cref="Fence"/> the other way. libtorch's caching allocators do not see these copies, so callers keep every
/// device tensor a copy touches until its fence. A fence orders only the GPU's streams, while the host writes page-locked
/// memory itself when it hands a block out again (pin_memory copies into it): so the link keeps each host buffer a copy to
/// the device reads until an event recorded after that copy has completed, and only then lets it go back to libtorch's
/// host allocator. A buffer whose copy is done goes back to a pool of its size, from which the next copy to the host of that
/// size takes it (Megatron-Kwai's get_cpu_buffer keeps its page-locked buffers the same way): an iteration offloads the
/// shapes the last one did, so page-locking (pin_memory, which also copies the pageable tensor it pins) happens in the first
/// iteration only.
/// </summary>
internal sealed unsafe class CudaHostLink(int device) : IHostLink
{
    private readonly CudaSideStream side = new(device);
    private readonly Queue<(IntPtr Done, Tensor Host)> reading = new();
    private readonly Dictionary<(ScalarType, long), Stack<Tensor>> pool = [];

    public void AfterCompute() => side.WaitForCompute();

    public Tensor ToHost(Tensor source)
    {
        Retire(wait: false);
        Tensor host;
        if (pool.TryGetValue((source.dtype, source.numel()), out var free) && free.TryPop(out var flat))
        {
            host = flat.view(source.shape);
            flat.Dispose();
        }
        else
        {
            using var pageable = empty(source.shape, source.dtype, CPU);
            host = pageable.pin_memory();
        }
        Copy(host, source);
        return host;
    }

    public void ToDeviceInto(Tensor source, Tensor target)
    {
        Copy(target, source);
        IntPtr done;
        CudaRuntime.Check(CudaRuntime.EventCreateWithFlags(&done, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        CudaRuntime.Check(CudaRuntime.EventRecord(done, side.Stream), "cudaEventRecord");
        reading.Enqueue((done, source.view(-1).DetachFromDisposeScope())); // the host buffer, whoever else lets it go
    }

    /// <summary>Returns to the pool the host buffers whose copies to the device are done (all of them, waiting, with
    /// <paramref name="wait"/>).</summary>
    private void Retire(bool wait)
    {
        if (wait) CudaRuntime.StreamSynchronize(side.Stream);
        while (reading.Count > 0)
        {
            var (done, host) = reading.Peek();
            if (!wait && CudaRuntime.EventQuery(done) != 0) return; // cudaErrorNotReady: still copying
            reading.Dequeue();
            CudaRuntime.EventDestroy(done);
            var key = (host.dtype, host.numel());
            if (!pool.TryGetValue(key, out var free)) pool[key] = free = new Stack<Tensor>();
            free.Push(host);
        }
    }

    private void Copy(Tensor target, Tensor source)
    {
        if (!source.is_contiguous()) throw new ArgumentException("the host link copies contiguous tensors only.", nameof(source));
        nuint bytes = (nuint)(source.NumberOfElements * source.ElementSize);
        CudaRuntime.Check(CudaRuntime.MemcpyAsync(TensorPointer.Of(target), TensorPointer.Of(source), bytes, CudaRuntime.MemcpyDefault, side.Stream), "cudaMemcpyAsync");
    }

    public void Fence() => side.JoinCompute();

    public void Dispose()
    {
        Retire(wait: true);
        foreach (var buffer in pool.Values.SelectMany(free => free)) buffer.Dispose();
        pool.Clear();
        side.Dispose();
    }
}
