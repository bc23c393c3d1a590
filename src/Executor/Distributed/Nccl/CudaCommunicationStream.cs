using Harness.Executor.Native;

namespace Harness.Executor.Distributed.Nccl;

/// <summary>
/// A CUDA stream for NCCL calls that overlap the model's kernels (Megatron's overlap_grad_reduce). Created
/// non-blocking (cudaStreamNonBlocking), so it never synchronizes implicitly with the legacy default stream the
/// kernels run on; the order between the two is only what the events say: <see cref="WaitForCompute"/> records an
/// event on stream 0 where the data became ready and makes this stream wait for it (cudaStreamWaitEvent) before the
/// collective; <see cref="JoinCompute"/> records one on this stream and makes stream 0 wait for it before the
/// optimizer reads the gradients. Neither blocks the host.
/// </summary>
internal sealed unsafe class CudaCommunicationStream : ICommunicationStream
{
    private readonly IntPtr stream, computeReady, communicationDone;

    public CudaCommunicationStream(int device)
    {
        CudaRuntime.Check(CudaRuntime.SetDevice(device), $"cudaSetDevice({device})");
        IntPtr s, a, b;
        CudaRuntime.Check(CudaRuntime.StreamCreateWithFlags(&s, CudaRuntime.StreamNonBlocking), "cudaStreamCreateWithFlags");
        CudaRuntime.Check(CudaRuntime.EventCreateWithFlags(&a, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        CudaRuntime.Check(CudaRuntime.EventCreateWithFlags(&b, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        (stream, computeReady, communicationDone) = (s, a, b);
    }

    public void WaitForCompute()
    {
        CudaRuntime.Check(CudaRuntime.EventRecord(computeReady, IntPtr.Zero), "cudaEventRecord");
        CudaRuntime.Check(CudaRuntime.StreamWaitEvent(stream, computeReady, 0), "cudaStreamWaitEvent");
    }

    public void JoinCompute()
    {
        CudaRuntime.Check(CudaRuntime.EventRecord(communicationDone, stream), "cudaEventRecord");
        CudaRuntime.Check(CudaRuntime.StreamWaitEvent(IntPtr.Zero, communicationDone, 0), "cudaStreamWaitEvent");
    }

    public IDisposable Enqueue(ICommunicator group) =>
        group is NcclCommunicator nccl
            ? nccl.UseStream(stream)
            : throw new CommunicatorException($"group {group.Name} is not an NCCL communicator; a CUDA stream cannot run its calls.");

    public void Dispose()
    {
        CudaRuntime.StreamSynchronize(stream);
        CudaRuntime.EventDestroy(computeReady);
        CudaRuntime.EventDestroy(communicationDone);
        CudaRuntime.StreamDestroy(stream);
    }
}
