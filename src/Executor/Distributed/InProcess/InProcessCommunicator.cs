using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Distributed.InProcess;

/// <summary>
/// A rank's view of an <see cref="InProcessGroup"/>. Reductions add the members' tensors in rank order, so every
/// rank gets bit-identical results and a run is reproducible. Results are computed into temporaries between the
/// two barriers of an exchange and written to the caller's tensors only afterwards, so in-place calls (an
/// all-gather whose input is a block of its output) are safe.
/// </summary>
internal sealed class InProcessCommunicator(InProcessWorld world, InProcessGroup group, int rank, string name) : ICommunicator
{
    public int Rank { get; } = rank;
    public int Size => group.GlobalRanks.Length;
    public string Name { get; } = name;
    public CommunicationStats Stats { get; } = new();

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum) =>
        Collective("all-reduce", tensor, tensor, all => Reduce(all.Select(t => ((Tensor)t!).reshape(-1)), op));

    public void AllGather(Tensor input, Tensor output)
    {
        RequireElements("all-gather output", output, input.numel() * Size);
        Collective("all-gather", input, output, all => torch.cat(all.Select(t => ((Tensor)t!).reshape(-1)).ToArray()));
    }

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        long n = output.numel();
        RequireElements("reduce-scatter input", input, n * Size);
        Collective("reduce-scatter", input, output, all => Reduce(all.Select(t => ((Tensor)t!).reshape(-1).narrow(0, Rank * n, n)), op));
    }

    public void AllToAll(Tensor input, Tensor output)
    {
        long n = input.numel() / Size;
        if (n * Size != input.numel() || output.numel() != input.numel())
            throw new CommunicatorException($"{What("all-to-all")}: input has {input.numel()} elements and output {output.numel()}; both must have the same multiple of the group size {Size}.");
        Collective("all-to-all", input, output, all => torch.cat(all.Select(t => ((Tensor)t!).reshape(-1).narrow(0, Rank * n, n)).ToArray()));
    }

    public void Broadcast(Tensor tensor, int root)
    {
        if (root < 0 || root >= Size)
            throw new CommunicatorException($"{What("broadcast")}: root {root} is not a rank of this {Size}-rank group.");
        Collective("broadcast", tensor, tensor, all => ((Tensor)all[root]!).reshape(-1).clone());
    }

    public void Send(Tensor tensor, int peer)
    {
        RequirePeer(peer);
        var sw = Stopwatch.StartNew();
        // The copy outlives the sender's dispose scope; the receiver disposes it. The detached alias is held until clone returns
        // (a bare temporary can be finalized mid-call).
        using var detached = tensor.detach();
        var copy = detached.clone().DetachFromDisposeScope();
        group.Channel(Rank, peer).Add(copy);
        Stats.Add(Bytes(tensor), sw.Elapsed);
    }

    public void Recv(Tensor tensor, int peer)
    {
        RequirePeer(peer);
        var sw = Stopwatch.StartNew();
        Tensor? received;
        try
        {
            if (!group.Channel(peer, Rank).TryTake(out received, (int)world.Timeout.TotalMilliseconds, world.Aborted))
                throw world.Fail(new CommunicatorException($"{What("recv")} from rank {peer} got nothing within {world.Timeout.TotalSeconds:0} s (no matching send)."));
        }
        catch (OperationCanceledException)
        {
            throw new CommunicatorException($"{What("recv")} aborted because another rank failed.");
        }
        using (received)
        {
            if (received.numel() != tensor.numel() || received.dtype != tensor.dtype)
                throw world.Fail(new CommunicatorException($"{What("recv")} expected {tensor.numel()} elements of {tensor.dtype} from rank {peer}, which sent {received.numel()} of {received.dtype}."));
            using var _ = torch.no_grad();
            using var shaped = received.view(tensor.shape); // held until copy_ returns (a bare temporary can be finalized mid-call)
            tensor.copy_(shaped);
        }
        Stats.Add(Bytes(tensor), sw.Elapsed);
    }

    /// <summary>Sends never block here, so a group needs no deferral.</summary>
    public IDisposable Group() => NoScope.Instance;

    public ICommunicationStream CreateCommunicationStream() => ComputeStream.Instance;

    public void Barrier() => group.Exchange<object?>(Rank, null, _ => null, world, What("barrier"));

    public ICommunicator? Split(int color, int key, string name)
    {
        var pairs = group.Exchange(Rank, (color, key), all => all.Select(o => ((int Color, int Key))o!).ToArray(), world, What("split"));
        int splitIndex = group.Splits; // read by all members between the same barriers, so equal everywhere
        group.Exchange<object?>(Rank, null, _ => { if (Rank == 0) group.Splits++; return null; }, world, What("split"));
        if (color == ICommunicator.NoColor) return null;
        var members = Enumerable.Range(0, Size).Where(r => pairs[r].Color == color)
            .OrderBy(r => pairs[r].Key).ThenBy(r => r).ToArray();
        var globalRanks = members.Select(r => group.GlobalRanks[r]).ToArray();
        var sub = world.Group($"{group.Id}/{splitIndex}/{color}", globalRanks);
        return new InProcessCommunicator(world, sub, Array.IndexOf(members, Rank), name);
    }

    public void Dispose() { }

    private void Collective(string op, Tensor input, Tensor output, Func<object?[], Tensor> compute)
    {
        RequireContiguous(op, input);
        RequireContiguous(op, output);
        var sw = Stopwatch.StartNew();
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var result = group.Exchange(Rank, input, compute, world, What(op));
        output.copy_(result.view(output.shape));
        Stats.Add(Bytes(input), sw.Elapsed);
    }

    /// <summary>Sum (or min, max, mean) in rank order: the same additions in the same order on every rank.</summary>
    private Tensor Reduce(IEnumerable<Tensor> blocks, ReduceOp op)
    {
        Tensor? acc = null;
        foreach (var b in blocks)
        {
            if (acc is null) { acc = b.clone(); continue; }
            switch (op)
            {
                case ReduceOp.Max: acc = Swap(acc, torch.maximum(acc, b)); break;
                case ReduceOp.Min: acc = Swap(acc, torch.minimum(acc, b)); break;
                default: acc.add_(b, One); break;
            }
        }
        using var size = Size.ToScalar();   // held until the call returns (HeldScalars says why)
        if (op == ReduceOp.Avg) acc!.div_(size);
        return acc!;
    }

    private static Tensor Swap(Tensor old, Tensor next)
    {
        old.Dispose();
        return next;
    }

    private string What(string op) => $"rank {Rank} of group {Name} (world rank {group.GlobalRanks[Rank]}): {op}";

    private void RequirePeer(int peer)
    {
        if (peer < 0 || peer >= Size || peer == Rank)
            throw new CommunicatorException($"{What("point-to-point")}: peer {peer} is not another rank of this {Size}-rank group.");
    }

    private void RequireElements(string what, Tensor t, long expected)
    {
        if (t.numel() != expected)
            throw new CommunicatorException($"{What(what)} has {t.numel()} elements; it must have {expected} (group size {Size} x input).");
    }

    private void RequireContiguous(string op, Tensor t)
    {
        if (!t.is_contiguous())
            throw new CommunicatorException($"{What(op)} needs contiguous tensors.");
    }

    internal static long Bytes(Tensor t) => t.numel() * t.element_size();

    private sealed class NoScope : IDisposable
    {
        public static readonly NoScope Instance = new();
        public void Dispose() { }
    }
}
