using System.Collections.Concurrent;
using Harness.Executor.Native;

namespace Harness.Executor.Distributed.Nccl;

/// <summary>
/// Watches one NCCL communicator's calls the way PyTorch's ProcessGroupNCCL watchdog does: each call is
/// bracketed by CUDA events on the stream it runs on; a background thread polls them, adds each finished call's GPU time to
/// the group's <see cref="CommunicationStats"/>, and when a call has not finished within the timeout, or NCCL
/// reports an asynchronous error, aborts the communicator (ncclCommAbort, which unblocks the GPU) and calls
/// <see cref="onFailure"/> with a message naming the rank, group and call (by default: print it and exit, so the
/// launcher stops the other ranks instead of every rank hanging).
/// </summary>
internal sealed unsafe class NcclWatchdog : IDisposable
{
    private sealed record Pending(string Call, long Bytes, IntPtr Start, IntPtr End, DateTime Issued);

    private readonly ConcurrentQueue<Pending> pending = new();
    private readonly ConcurrentBag<IntPtr> freeEvents = new();
    private readonly IntPtr comm;
    private readonly int device;
    private readonly string who;
    private readonly TimeSpan timeout;
    private readonly CommunicationStats stats;
    private readonly Action<string> onFailure;
    private readonly Thread thread;
    private volatile bool stopping, aborted;

    /// <summary>True once the communicator was aborted: it must not be used or destroyed again.</summary>
    public bool Aborted => aborted;

    public NcclWatchdog(IntPtr comm, int device, string who, TimeSpan timeout, CommunicationStats stats, Action<string> onFailure)
    {
        (this.comm, this.device, this.who, this.timeout, this.stats, this.onFailure) = (comm, device, who, timeout, stats, onFailure);
        thread = new Thread(Watch) { IsBackground = true, Name = $"nccl watchdog {who}" };
        thread.Start();
    }

    /// <summary>Records the start event on the call's stream; pass the result to <see cref="End"/> after enqueuing the call.</summary>
    public IntPtr Begin(IntPtr stream)
    {
        var start = Event();
        CudaRuntime.Check(CudaRuntime.EventRecord(start, stream), "cudaEventRecord");
        return start;
    }

    public void End(IntPtr start, string call, long bytes, IntPtr stream)
    {
        var end = Event();
        CudaRuntime.Check(CudaRuntime.EventRecord(end, stream), "cudaEventRecord");
        pending.Enqueue(new Pending(call, bytes, start, end, DateTime.UtcNow));
    }

    private IntPtr Event()
    {
        if (freeEvents.TryTake(out var e)) return e;
        CudaRuntime.Check(CudaRuntime.EventCreate(&e), "cudaEventCreate");
        return e;
    }

    private void Watch()
    {
        CudaRuntime.SetDevice(device);
        while (!stopping)
        {
            while (pending.TryPeek(out var p))
            {
                int state = CudaRuntime.EventQuery(p.End);
                if (state == CudaRuntime.NotReady)
                {
                    if (DateTime.UtcNow - p.Issued > timeout)
                    {
                        Abort($"{who}: NCCL {p.Call} of {p.Bytes} bytes did not finish within {timeout.TotalSeconds:0} s; the communicator was aborted. Another rank probably failed (see its error) or the ranks called different collectives.");
                        return;
                    }
                    break;
                }
                pending.TryDequeue(out _);
                if (state != 0)
                {
                    Abort($"{who}: CUDA reported an error during NCCL {p.Call}: error {state}; the communicator was aborted.");
                    return;
                }
                float ms;
                if (CudaRuntime.EventElapsedTime(&ms, p.Start, p.End) == 0)
                    stats.Add(p.Bytes, TimeSpan.FromMilliseconds(ms));
                freeEvents.Add(p.Start);
                freeEvents.Add(p.End);
            }
            NcclResult async;
            if (NcclLibrary.CommGetAsyncError(comm, &async) == NcclResult.Success && async is not (NcclResult.Success or NcclResult.InProgress))
            {
                Abort($"{who}: NCCL reported an asynchronous error ({async}); the communicator was aborted. A peer rank probably died.");
                return;
            }
            Thread.Sleep(20);
        }
    }

    private void Abort(string message)
    {
        aborted = true;
        NcclLibrary.CommAbort(comm);
        onFailure(message);
    }

    /// <summary>Stops watching (after the caller synchronized) and frees the events.</summary>
    public void Dispose()
    {
        stopping = true;
        if (Thread.CurrentThread != thread) thread.Join();
        foreach (var p in pending) { freeEvents.Add(p.Start); freeEvents.Add(p.End); }
        while (freeEvents.TryTake(out var e)) CudaRuntime.EventDestroy(e);
    }
}
