namespace Harness.Executor.Distributed.InProcess;

/// <summary>
/// Runs one function per rank on its own thread over an <see cref="InProcessWorld"/> and waits for all of them.
/// The first failure aborts the other ranks' communication; every rank's own error (not the abort it caused
/// elsewhere) reaches the caller in a <see cref="RankFailuresException"/>.
/// </summary>
public static class InProcessJob
{
    public static void Run(int size, Action<ICommunicator> rankMain, TimeSpan? timeout = null) =>
        Run<object?>(size, c => { rankMain(c); return null; }, timeout);

    /// <summary>Runs <paramref name="rankMain"/> on every rank and returns the results in rank order.</summary>
    public static T[] Run<T>(int size, Func<ICommunicator, T> rankMain, TimeSpan? timeout = null)
    {
        var world = new InProcessWorld(size, timeout);
        var results = new T[size];
        var errors = new Exception?[size];
        var threads = Enumerable.Range(0, size).Select(rank => new Thread(() =>
        {
            try
            {
                using var comm = world.Communicator(rank);
                results[rank] = rankMain(comm);
            }
            catch (Exception e)
            {
                errors[rank] = e;
                world.Fail(e);
            }
        }, maxStackSize: 16 << 20) { Name = $"rank {rank}", IsBackground = true }).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        var failures = errors.Select((e, r) => (Rank: r, Error: e))
            .Where(f => f.Error is not null && !IsAbortEcho(f.Error)).Select(f => (f.Rank, f.Error!)).ToList();
        if (failures.Count == 0 && errors.Any(e => e is not null))
            failures = errors.Select((e, r) => (r, e)).Where(f => f.e is not null).Select(f => (f.r, f.e!)).ToList();
        if (failures.Count > 0) throw new RankFailuresException(failures);
        return results;
    }

    private static bool IsAbortEcho(Exception e) =>
        e is CommunicatorException c && c.Message.EndsWith("aborted because another rank failed.", StringComparison.Ordinal);
}

/// <summary>One or more ranks failed; the message lists each rank's own error.</summary>
public sealed class RankFailuresException(IReadOnlyList<(int Rank, Exception Error)> failures)
    : Exception(string.Join(Environment.NewLine, failures.Select(f => $"rank {f.Rank}: {f.Error.Message}")), failures[0].Error)
{
    public IReadOnlyList<(int Rank, Exception Error)> Failures { get; } = failures;
}
