namespace Harness.Executor.Distributed;

/// <summary>
/// Calls, bytes and time of one process group's communication, accumulated since it was created.
/// Time is what the calling rank spent in the call (in-process backend: waiting for peers included) or the
/// GPU time between CUDA events around each NCCL call (NCCL backend), so it is the exposed communication time.
/// </summary>
public sealed class CommunicationStats
{
    private long calls, bytes, ticks;

    public long Calls => Interlocked.Read(ref calls);
    public long Bytes => Interlocked.Read(ref bytes);
    public TimeSpan Time => TimeSpan.FromTicks(Interlocked.Read(ref ticks));

    public void Add(long messageBytes, TimeSpan elapsed)
    {
        Interlocked.Increment(ref calls);
        Interlocked.Add(ref bytes, messageBytes);
        Interlocked.Add(ref ticks, elapsed.Ticks);
    }
}
