using System.Collections.Concurrent;

namespace Harness.Executor.Distributed.InProcess;

/// <summary>
/// Threads as ranks: the state the in-process communicators of one job share. A failure on any rank aborts every
/// pending and later call on the others, so a job ends with the first rank's error instead of hanging.
/// </summary>
public sealed class InProcessWorld
{
    private readonly CancellationTokenSource abort = new();
    private readonly ConcurrentDictionary<string, Lazy<InProcessGroup>> groups = new();

    public InProcessWorld(int size, TimeSpan? timeout = null)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, "an in-process world needs at least one rank.");
        Size = size;
        Timeout = timeout ?? TimeSpan.FromMinutes(5);
    }

    public int Size { get; }

    /// <summary>How long a rank waits for its peers in one call before the job is aborted.</summary>
    public TimeSpan Timeout { get; }

    internal CancellationToken Aborted => abort.Token;

    /// <summary>The world communicator of rank <paramref name="rank"/>; call once per rank thread.</summary>
    public ICommunicator Communicator(int rank)
    {
        if (rank < 0 || rank >= Size)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {Size}).");
        return new InProcessCommunicator(this, Group("world", Enumerable.Range(0, Size).ToArray()), rank, "world");
    }

    /// <summary>Cancels every waiting and future call (a rank failed); returns the exception for throwing.</summary>
    public Exception Fail(Exception reason)
    {
        abort.Cancel();
        return reason;
    }

    internal InProcessGroup Group(string key, int[] globalRanks) =>
        groups.GetOrAdd(key, _ => new Lazy<InProcessGroup>(() => new InProcessGroup(key, globalRanks))).Value;
}
