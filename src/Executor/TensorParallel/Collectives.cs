using Harness.Executor.Distributed;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// The tensor-level collectives the mappings are built from, on new tensors (inputs untouched). Sequence
/// operations act on <see cref="SequenceDim"/> of batch-first activations [b, s, h]: NCCL gathers and scatters
/// along the first dimension, so the sequence is moved there and back (Megatron keeps [s, b, h] to avoid that).
/// </summary>
internal static class Collectives
{
    public const int SequenceDim = 1;

    public static Tensor AllReduce(Tensor x, ICommunicator group)
    {
        var y = x.contiguous().clone();
        group.AllReduce(y);
        return y;
    }

    /// <summary>Concatenates every rank's block along <paramref name="dim"/>, in rank order.</summary>
    public static Tensor AllGather(Tensor x, ICommunicator group, int dim = SequenceDim)
    {
        using var scope = NewDisposeScope();
        var first = x.transpose(dim, 0).contiguous();
        var shape = first.shape.ToArray();
        shape[0] *= group.Size;
        var gathered = empty(shape, dtype: x.dtype, device: x.device);
        group.AllGather(first, gathered);
        return gathered.transpose(0, dim).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Sums over the group and keeps this rank's block of <paramref name="dim"/>.</summary>
    public static Tensor ReduceScatter(Tensor x, ICommunicator group, int dim = SequenceDim)
    {
        using var scope = NewDisposeScope();
        var first = x.transpose(dim, 0).contiguous();
        var shape = first.shape.ToArray();
        shape[0] /= group.Size;
        var block = empty(shape, dtype: x.dtype, device: x.device);
        group.ReduceScatter(first, block);
        return block.transpose(0, dim).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Sends block r of <paramref name="x"/>'s first dimension (Size blocks) to rank r; block r of the result came
    /// from rank r.</summary>
    public static Tensor AllToAll(Tensor x, ICommunicator group)
    {
        var input = x.contiguous();
        var exchanged = empty_like(input);
        group.AllToAll(input, exchanged);
        return exchanged;
    }

    /// <summary>This rank's block of <paramref name="dim"/>, no communication.</summary>
    public static Tensor Split(Tensor x, ICommunicator group, int dim = SequenceDim) =>
        x.chunk(group.Size, dim)[group.Rank].contiguous();
}
