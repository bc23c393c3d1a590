namespace Harness.Executor.Distributed;

/// <summary>
/// Where collectives are enqueued relative to compute (the stream the model's kernels run on). Megatron overlaps the
/// data-parallel gradient reduction with backward by issuing it on a separate CUDA stream; data one stream writes
/// and another reads needs an explicit wait in each direction:
/// <see cref="WaitForCompute"/> before a collective on what the compute stream produced, <see cref="JoinCompute"/>
/// before the compute stream reads (or reuses) what the collectives touched.
/// </summary>
public interface ICommunicationStream : IDisposable
{
    /// <summary>Later calls on this stream start after what the compute stream has enqueued so far.</summary>
    void WaitForCompute();

    /// <summary>Later compute starts after what this stream has enqueued so far.</summary>
    void JoinCompute();

    /// <summary>Within the returned scope, <paramref name="group"/>'s calls are enqueued on this stream.</summary>
    IDisposable Enqueue(ICommunicator group);
}

/// <summary>
/// Collectives on the compute stream itself: ordered with compute, so there is nothing to wait for (NCCL on stream 0
/// without overlap; the in-process backend, whose calls run synchronously on the calling thread).
/// </summary>
public sealed class ComputeStream : ICommunicationStream
{
    public static ComputeStream Instance { get; } = new();

    private ComputeStream() { }

    public void WaitForCompute() { }
    public void JoinCompute() { }
    public IDisposable Enqueue(ICommunicator group) => this;
    public void Dispose() { }
}
