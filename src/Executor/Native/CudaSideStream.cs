namespace Harness.Executor.Native;

/// <summary>
/// A CUDA stream beside the compute stream (the legacy default stream the executor's kernels run on), created non-blocking
/// (cudaStreamNonBlocking), so it never synchronizes implicitly with it; the order between the two is only what the events
/// say: <see cref="WaitForCompute"/> records an event on stream 0 and makes this stream wait for it (cudaStreamWaitEvent),
/// <see cref="JoinCompute"/> records one on this stream and makes stream 0 wait for it. Neither blocks the host.
/// </summary>
internal sealed unsafe class CudaSideStream : IDisposable
{
    private readonly IntPtr computeReady, sideDone;

    public IntPtr Stream { get; }

    public CudaSideStream(int device)
    {
        CudaRuntime.Check(CudaRuntime.SetDevice(device), $"cudaSetDevice({device})");
        IntPtr s, a, b;
        CudaRuntime.Check(CudaRuntime.StreamCreateWithFlags(&s, CudaRuntime.StreamNonBlocking), "cudaStreamCreateWithFlags");
        CudaRuntime.Check(CudaRuntime.EventCreateWithFlags(&a, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        CudaRuntime.Check(CudaRuntime.EventCreateWithFlags(&b, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        (Stream, computeReady, sideDone) = (s, a, b);
    }

    /// <summary>Later work on this stream waits for what the compute stream has issued so far.</summary>
    public void WaitForCompute()
    {
        CudaRuntime.Check(CudaRuntime.EventRecord(computeReady, IntPtr.Zero), "cudaEventRecord");
        CudaRuntime.Check(CudaRuntime.StreamWaitEvent(Stream, computeReady, 0), "cudaStreamWaitEvent");
    }

    /// <summary>Later work on the compute stream waits for what this stream has issued so far.</summary>
    public void JoinCompute()
    {
        CudaRuntime.Check(CudaRuntime.EventRecord(sideDone, Stream), "cudaEventRecord");
        CudaRuntime.Check(CudaRuntime.StreamWaitEvent(IntPtr.Zero, sideDone, 0), "cudaStreamWaitEvent");
    }

    /// <summary>Synchronizes the stream (what is in flight is done with its buffers), then destroys it and its events.</summary>
    public void Dispose()
    {
        CudaRuntime.StreamSynchronize(Stream);
        CudaRuntime.EventDestroy(computeReady);
        CudaRuntime.EventDestroy(sideDone);
        CudaRuntime.StreamDestroy(Stream);
    }
}
