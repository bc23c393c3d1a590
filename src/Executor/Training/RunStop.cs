using System.Diagnostics;
using Harness.Executor.Training.Records;

namespace Harness.Executor.Training;

/// <summary>
/// What asks a run to stop while it trains: a signal (<see cref="Request"/>, from any thread) and Megatron's
/// --exit-duration-in-mins deadline, counted from when this was made (Megatron counts from the program's start,
/// _TRAIN_START_TIME in megatron/training/training.py, NVIDIA/Megatron-LM d98e8a6). Read at the end of each iteration
/// (<see cref="Pending"/>); the ranks of a parallel run then agree on the maximum, as Megatron all-reduces its exit
/// decision, so that every rank stops after the same iteration.
/// </summary>
public sealed class RunStop
{
    private readonly long? deadline;
    private int requested;

    /// <param name="exitDuration">Megatron's --exit-duration-in-mins: the run stops once more than this has passed.</param>
    public RunStop(TimeSpan? exitDuration = null) =>
        deadline = exitDuration is TimeSpan d ? Stopwatch.GetTimestamp() + (long)(d.TotalSeconds * Stopwatch.Frequency) : null;

    /// <summary>The stop a signal asks for (the most urgent one asked so far stays).</summary>
    public void Request(StopReason reason)
    {
        int seen;
        do seen = Volatile.Read(ref requested);
        while ((int)reason > seen && Interlocked.CompareExchange(ref requested, (int)reason, seen) != seen);
    }

    /// <summary>What a signal asked for so far (none yet: <see cref="StopReason.None"/>).</summary>
    public StopReason Requested => (StopReason)Volatile.Read(ref requested);

    /// <summary>The stop due now: a signal's, else the time limit's once passed.</summary>
    public StopReason Pending =>
        Requested != StopReason.None ? Requested : deadline is long d && Stopwatch.GetTimestamp() > d ? StopReason.ExitDuration : StopReason.None;
}
