using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Distributed.Nccl;

/// <summary>
/// A process group over NCCL (one process per GPU). Calls are enqueued on CUDA stream 0, the legacy default
/// stream TorchSharp's kernels run on, so they are ordered with the model's kernels without extra syncs; within a
/// <see cref="CudaCommunicationStream"/>'s scope they go to that stream instead, to overlap compute.
/// Each call is watched by an <see cref="NcclWatchdog"/>.
/// </summary>
public sealed unsafe class NcclCommunicator : ICommunicator
{
    private readonly IntPtr comm;
    private readonly int device;
    private readonly TimeSpan timeout;
    private readonly Action<string> onFailure;
    private readonly NcclWatchdog watchdog;
    private IntPtr stream; // 0: the legacy default stream
    private int groupDepth;
    private IntPtr groupStart;
    private long groupBytes;

    private NcclCommunicator(IntPtr comm, int rank, int size, int device, string name, TimeSpan timeout, Action<string> onFailure)
    {
        (this.comm, Rank, Size, this.device, Name, this.timeout, this.onFailure) = (comm, rank, size, device, name, timeout, onFailure);
        watchdog = new NcclWatchdog(comm, device, $"rank {rank} of group {name}", timeout, Stats, onFailure);
    }

    /// <summary>
    /// The world communicator: rank 0 makes the NCCL unique id, <paramref name="shareId"/> gives it to every rank
    /// (the TCP rendezvous), and all ranks join with ncclCommInitRank on CUDA device <paramref name="device"/>.
    /// </summary>
    public static NcclCommunicator CreateWorld(int rank, int size, int device, Func<byte[]?, byte[]> shareId, TimeSpan timeout, Action<string>? onFailure = null)
    {
        try
        {
            CudaRuntime.Check(CudaRuntime.SetDevice(device), $"cudaSetDevice({device})");
            NcclUniqueId id;
            byte[]? mine = null;
            if (rank == 0)
            {
                NcclLibrary.Check(NcclLibrary.GetUniqueId(&id), "ncclGetUniqueId", IntPtr.Zero);
                mine = new Span<byte>(id.Internal, NcclUniqueId.Bytes).ToArray();
            }
            byte[] shared = shareId(mine);
            if (shared.Length != NcclUniqueId.Bytes)
                throw new CommunicatorException($"rank {rank} received a {shared.Length}-byte NCCL unique id; it must be {NcclUniqueId.Bytes} bytes.");
            shared.CopyTo(new Span<byte>(id.Internal, NcclUniqueId.Bytes));
            IntPtr comm;
            NcclLibrary.Check(NcclLibrary.CommInitRank(&comm, size, id, rank), $"ncclCommInitRank(rank {rank} of {size})", IntPtr.Zero);
            return new NcclCommunicator(comm, rank, size, device, "world", timeout, onFailure ?? ExitWithMessage);
        }
        catch (TypeInitializationException e) when (e.InnerException is CommunicatorException c)
        {
            throw c;
        }
    }

    /// <summary>NCCL's version code, e.g. 22809 for 2.28.9.</summary>
    public static int Version => NcclLibrary.Version();

    public int Rank { get; }
    public int Size { get; }
    public string Name { get; }
    public CommunicationStats Stats { get; } = new();

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum) =>
        Issue("all-reduce", tensor, () => NcclLibrary.AllReduce(Ptr(tensor), Ptr(tensor), Count(tensor), Type(tensor), (int)op, comm, stream));

    public void AllGather(Tensor input, Tensor output)
    {
        RequireElements("all-gather output", output, input.numel() * Size);
        RequireSameType(input, output);
        Issue("all-gather", input, () => NcclLibrary.AllGather(Ptr(input), Ptr(output), Count(input), Type(input), comm, stream));
    }

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        RequireElements("reduce-scatter input", input, output.numel() * Size);
        RequireSameType(input, output);
        Issue("reduce-scatter", input, () => NcclLibrary.ReduceScatter(Ptr(input), Ptr(output), Count(output), Type(output), (int)op, comm, stream));
    }

    /// <summary>NCCL has no all-to-all of its own: a group of one send and one receive per rank, this rank's own block
    /// included (as PyTorch's ProcessGroupNCCL runs all_to_all_single).</summary>
    public void AllToAll(Tensor input, Tensor output)
    {
        long n = input.numel() / Size;
        if (n * Size != input.numel() || output.numel() != input.numel())
            throw new CommunicatorException($"rank {Rank} of group {Name}: all-to-all input has {input.numel()} elements and output {output.numel()}; both must have the same multiple of the group size {Size}.");
        RequireSameType(input, output);
        using var blocks = NewDisposeScope();
        var (from, to) = (input.view(-1), output.view(-1));
        using (Group())
            for (int r = 0; r < Size; r++)
            {
                Send(from.narrow(0, r * n, n), r);
                Recv(to.narrow(0, r * n, n), r);
            }
    }

    public void Broadcast(Tensor tensor, int root)
    {
        RequireRank(root);
        Issue("broadcast", tensor, () => NcclLibrary.Broadcast(Ptr(tensor), Ptr(tensor), Count(tensor), Type(tensor), root, comm, stream));
    }

    public void Send(Tensor tensor, int peer)
    {
        RequireRank(peer);
        Issue($"send to {peer}", tensor, () => NcclLibrary.Send(Ptr(tensor), Count(tensor), Type(tensor), peer, comm, stream));
    }

    public void Recv(Tensor tensor, int peer)
    {
        RequireRank(peer);
        Issue($"recv from {peer}", tensor, () => NcclLibrary.Recv(Ptr(tensor), Count(tensor), Type(tensor), peer, comm, stream));
    }

    public IDisposable Group()
    {
        if (groupDepth++ == 0)
        {
            groupStart = watchdog.Begin(stream);
            groupBytes = 0;
        }
        NcclLibrary.Check(NcclLibrary.GroupStart(), "ncclGroupStart", comm);
        return new GroupScope(this);
    }

    public void Barrier()
    {
        using var one = torch.ones(1, dtype: ScalarType.Float32, device: new Device(DeviceType.CUDA, device));
        AllReduce(one);
        CudaRuntime.Check(CudaRuntime.StreamSynchronize(IntPtr.Zero), "cudaStreamSynchronize");
    }

    public ICommunicationStream CreateCommunicationStream() => new CudaCommunicationStream(device);

    /// <summary>Within the returned scope, this group's calls are enqueued on <paramref name="cudaStream"/> instead of stream 0.</summary>
    internal IDisposable UseStream(IntPtr cudaStream)
    {
        var previous = stream;
        stream = cudaStream;
        return new StreamScope(this, previous);
    }

    public ICommunicator? Split(int color, int key, string name)
    {
        IntPtr sub;
        NcclLibrary.Check(NcclLibrary.CommSplit(comm, color, key, &sub, IntPtr.Zero), $"ncclCommSplit({name})", comm);
        if (sub == IntPtr.Zero) return null; // NCCL_SPLIT_NOCOLOR
        int rank = 0, size = 0;
        NcclLibrary.Check(NcclLibrary.CommUserRank(sub, &rank), "ncclCommUserRank", sub);
        NcclLibrary.Check(NcclLibrary.CommCount(sub, &size), "ncclCommCount", sub);
        return new NcclCommunicator(sub, rank, size, device, name, timeout, onFailure);
    }

    /// <summary>Waits for this group's calls (stream 0), stops its watchdog and destroys the communicator.</summary>
    public void Dispose()
    {
        if (!watchdog.Aborted) CudaRuntime.StreamSynchronize(IntPtr.Zero);
        watchdog.Dispose();
        if (!watchdog.Aborted) NcclLibrary.CommDestroy(comm);
    }

    private void Issue(string call, Tensor tensor, Func<NcclResult> enqueue)
    {
        // After a failure in a gradient hook backward goes on to its end (BackwardFailure): its later calls must not
        // reach a communicator the watchdog has aborted.
        if (watchdog.Aborted)
            throw new CommunicatorException($"rank {Rank} of group {Name}: NCCL {call} after the communicator was aborted by an earlier failure.");
        if (!tensor.is_contiguous())
            throw new CommunicatorException($"rank {Rank} of group {Name}: NCCL {call} needs a contiguous tensor.");
        if (tensor.device_type != DeviceType.CUDA)
            throw new CommunicatorException($"rank {Rank} of group {Name}: NCCL {call} needs a CUDA tensor, not {tensor.device}.");
        long bytes = tensor.numel() * tensor.element_size();
        if (groupDepth > 0)
        {
            NcclLibrary.Check(enqueue(), $"NCCL {call} on group {Name}", comm);
            groupBytes += bytes;
            return;
        }
        var start = watchdog.Begin(stream);
        NcclLibrary.Check(enqueue(), $"NCCL {call} on group {Name}", comm);
        watchdog.End(start, call, bytes, stream);
    }

    private void EndGroup()
    {
        NcclLibrary.Check(NcclLibrary.GroupEnd(), "ncclGroupEnd", comm);
        if (--groupDepth == 0) watchdog.End(groupStart, "group of send/recv", groupBytes, stream);
    }

    private static IntPtr Ptr(Tensor t) => TensorPointer.Of(t);
    private static nuint Count(Tensor t) => (nuint)t.numel();

    private NcclDataType Type(Tensor t) => t.dtype switch
    {
        ScalarType.Int8 => NcclDataType.Int8,
        ScalarType.Byte or ScalarType.Bool => NcclDataType.Uint8,
        ScalarType.Int32 => NcclDataType.Int32,
        ScalarType.Int64 => NcclDataType.Int64,
        ScalarType.Float16 => NcclDataType.Float16,
        ScalarType.Float32 => NcclDataType.Float32,
        ScalarType.Float64 => NcclDataType.Float64,
        ScalarType.BFloat16 => NcclDataType.Bfloat16,
        var other => throw new CommunicatorException($"rank {Rank} of group {Name}: NCCL has no data type for {other}; use int8/uint8/int32/int64/float16/bfloat16/float32/float64."),
    };

    private void RequireRank(int r)
    {
        if (r < 0 || r >= Size)
            throw new CommunicatorException($"rank {Rank} of group {Name}: rank {r} is not in this {Size}-rank group.");
    }

    private void RequireElements(string what, Tensor t, long expected)
    {
        if (t.numel() != expected)
            throw new CommunicatorException($"rank {Rank} of group {Name}: {what} has {t.numel()} elements; it must have {expected} (group size {Size} x input).");
    }

    private void RequireSameType(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype)
            throw new CommunicatorException($"rank {Rank} of group {Name}: input is {a.dtype} but output is {b.dtype}.");
    }

    /// <summary>The default failure action: the message on stderr, then exit, as a dead rank must not hang the job.</summary>
    private static void ExitWithMessage(string message)
    {
        Console.Error.WriteLine($"harness: {message}");
        Environment.Exit(3);
    }

    private sealed class GroupScope(NcclCommunicator owner) : IDisposable
    {
        public void Dispose() => owner.EndGroup();
    }

    private sealed class StreamScope(NcclCommunicator owner, IntPtr previous) : IDisposable
    {
        public void Dispose() => owner.stream = previous;
    }
}
