using TorchSharp;

namespace Harness.Executor.Distributed;

/// <summary>
/// One process group: the collectives and point-to-point calls Megatron makes through torch.distributed, over
/// TorchSharp tensors of any dtype. Ranks are numbered within the group (0 .. Size-1). Every member must make
/// the same collective calls in the same order, as with NCCL.
/// Shapes follow NCCL: <see cref="AllGather"/> writes Size copies of the input's element count into the output,
/// rank r's block at offset r·numel; <see cref="ReduceScatter"/> reduces the input and keeps block Rank; <see cref="AllToAll"/>
/// exchanges blocks of numel/Size. Tensors
/// must be contiguous.
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This rank's index in the group.</summary>
    int Rank { get; }

    /// <summary>Ranks in the group.</summary>
    int Size { get; }

    /// <summary>A name for messages ("world", "tp", ...).</summary>
    string Name { get; }

    /// <summary>Bytes moved and time spent in this group's calls so far.</summary>
    CommunicationStats Stats { get; }

    /// <summary>Reduces <paramref name="tensor"/> over the group, in place on every rank.</summary>
    void AllReduce(torch.Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>Concatenates every rank's <paramref name="input"/> in rank order into <paramref name="output"/> (Size·numel elements).</summary>
    void AllGather(torch.Tensor input, torch.Tensor output);

    /// <summary>Reduces <paramref name="input"/> (Size·numel(output) elements) and writes this rank's block into <paramref name="output"/>.</summary>
    void ReduceScatter(torch.Tensor input, torch.Tensor output, ReduceOp op = ReduceOp.Sum);

    /// <summary>
    /// Cuts <paramref name="input"/> into Size equal blocks in rank order and sends block r to rank r; block r of
    /// <paramref name="output"/> (as many elements as the input) is what rank r sent this rank (torch.distributed's
    /// all_to_all_single with equal splits).
    /// </summary>
    void AllToAll(torch.Tensor input, torch.Tensor output);

    /// <summary>Copies <paramref name="root"/>'s <paramref name="tensor"/> into every rank's, in place.</summary>
    void Broadcast(torch.Tensor tensor, int root);

    /// <summary>Sends <paramref name="tensor"/> to group rank <paramref name="peer"/>, which must post a matching <see cref="Recv"/>.</summary>
    void Send(torch.Tensor tensor, int peer);

    /// <summary>Receives into <paramref name="tensor"/> from group rank <paramref name="peer"/>.</summary>
    void Recv(torch.Tensor tensor, int peer);

    /// <summary>
    /// Starts a group of calls that are issued together when the returned scope is disposed (ncclGroupStart/End):
    /// needed when a rank both sends and receives, so that neither side waits on the other.
    /// </summary>
    IDisposable Group();

    /// <summary>Returns once every rank of the group has reached it.</summary>
    void Barrier();

    /// <summary>
    /// A stream on which this backend's calls can overlap compute: a non-blocking CUDA stream for NCCL; the compute
    /// stream itself for the in-process backend, whose calls complete before they return.
    /// </summary>
    ICommunicationStream CreateCommunicationStream();

    /// <summary>
    /// Collective over this group: ranks that pass the same non-negative <paramref name="color"/> form a new group,
    /// ordered by <paramref name="key"/>; ranks passing <see cref="NoColor"/> get null (ncclCommSplit's contract).
    /// </summary>
    ICommunicator? Split(int color, int key, string name);

    /// <summary>The color of a rank that joins no group in <see cref="Split"/> (NCCL_SPLIT_NOCOLOR).</summary>
    const int NoColor = -1;
}
