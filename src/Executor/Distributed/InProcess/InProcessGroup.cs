namespace Harness.Executor.Distributed.InProcess;

/// <summary>
/// The shared state of one in-process group: a slot per member for exchanging tensors, a barrier that separates
/// "every member has posted" from "every member has read", and one FIFO channel per (sender, receiver) pair.
/// </summary>
internal sealed class InProcessGroup
{
    private readonly Barrier barrier;
    private readonly object?[] slots;
    private readonly System.Collections.Concurrent.BlockingCollection<TorchSharp.torch.Tensor>[,] channels;

    public InProcessGroup(string id, int[] globalRanks)
    {
        Id = id;
        GlobalRanks = globalRanks;
        int n = globalRanks.Length;
        barrier = new Barrier(n);
        slots = new object?[n];
        channels = new System.Collections.Concurrent.BlockingCollection<TorchSharp.torch.Tensor>[n, n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                channels[i, j] = new();
    }

    /// <summary>Unique in the world: the parent's id, the split's index and color.</summary>
    public string Id { get; }

    /// <summary>World ranks of the members, in group-rank order.</summary>
    public int[] GlobalRanks { get; }

    /// <summary>Splits made from this group so far; the same on every member because collectives run in the same order.</summary>
    public int Splits;

    /// <summary>
    /// Posts <paramref name="value"/>, waits for every member, lets <paramref name="read"/> see all posted values in
    /// rank order, and waits again so no member reuses its input while another is still reading it.
    /// </summary>
    public TResult Exchange<TResult>(int rank, object? value, Func<object?[], TResult> read, InProcessWorld world, string what)
    {
        slots[rank] = value;
        Wait(world, what);
        TResult result;
        try { result = read(slots); }
        finally { Wait(world, what); }
        return result;
    }

    public System.Collections.Concurrent.BlockingCollection<TorchSharp.torch.Tensor> Channel(int from, int to) => channels[from, to];

    private void Wait(InProcessWorld world, string what)
    {
        try
        {
            if (!barrier.SignalAndWait(world.Timeout, world.Aborted))
                throw world.Fail(new CommunicatorException($"{what} did not complete within {world.Timeout.TotalSeconds:0} s: a rank of the group never reached it (ranks called different collectives, or one is stuck)."));
        }
        catch (OperationCanceledException)
        {
            throw new CommunicatorException($"{what} aborted because another rank failed.");
        }
        catch (BarrierPostPhaseException e)
        {
            throw new CommunicatorException($"{what} failed: {e.Message}", e);
        }
    }
}
