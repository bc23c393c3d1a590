using Harness.Executor.TensorParallel;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>How a parameter of the serial model is split over tensor-parallel ranks.</summary>
public enum SplitKind { Replicated, Rows, Columns }

/// <summary>
/// How each parameter of the serial model (by its serial name: "layers.3.mlp.linear_fc1.weight") lies over t tensor-parallel
/// ranks, as <see cref="ShardedTensorParallel"/> builds it: the column-parallel linears (QKV, FC1) and the vocabulary tables
/// split their rows, FC1 under SwiGLU with stride 2 (each rank keeps its slice of gate and of up), and so do their biases; the
/// row-parallel linears (the attention projection, FC2) split their columns; norms, row-parallel biases and the position
/// table are whole on every rank. <see cref="Shard"/> cuts a full weight for a rank; <see cref="Join"/> puts the ranks' back.
/// </summary>
public sealed record WeightSplit(SplitKind Kind, int Stride = 1)
{
    public static WeightSplit Of(string serialName, ModelSpec model)
    {
        string[] parts = serialName.Split('.');
        if (parts[0] is "word_embeddings" or "output_layer") return new(SplitKind.Rows);
        if (parts.Length < 5 || parts[0] != "layers") return new(SplitKind.Replicated);
        return (parts[3], parts[4]) switch
        {
            ("linear_qkv", _) => new(SplitKind.Rows),
            ("linear_fc1", _) => new(SplitKind.Rows, model.Activation == Activation.SwiGlu ? 2 : 1),
            ("linear_proj" or "linear_fc2", "weight") => new(SplitKind.Columns),
            _ => new(SplitKind.Replicated),
        };
    }

    /// <summary>Rank <paramref name="rank"/>'s part of the full weight, as <see cref="ShardedTensorParallel"/> keeps it.</summary>
    public Tensor Shard(Tensor full, int rank, int size) => Kind switch
    {
        SplitKind.Rows => Shards.Rows(full, rank, size, Stride),
        SplitKind.Columns => Shards.Columns(full, rank, size),
        _ => full,
    };

    /// <summary>The shape rank's part has, of a full weight of <paramref name="full"/>'s shape.</summary>
    public long[] LocalShape(long[] full, int size)
    {
        var local = (long[])full.Clone();
        if (Kind == SplitKind.Rows) local[0] /= size;
        if (Kind == SplitKind.Columns) local[1] /= size;
        return local;
    }

    /// <summary>The full weight from every rank's part, in rank order (the first rank's where it is replicated).</summary>
    public Tensor Join(IReadOnlyList<Tensor> shards)
    {
        if (Kind == SplitKind.Replicated || shards.Count == 1) return shards[0];
        if (Kind == SplitKind.Columns) return cat(shards.ToArray(), 1);
        // Each rank holds its slice of every stride part in turn: part s is the ranks' slices s, concatenated.
        var parts = Enumerable.Range(0, Stride).Select(s => cat(shards.Select(t => t.chunk(Stride, 0)[s]).ToArray(), 0)).ToArray();
        return parts.Length == 1 ? parts[0] : cat(parts, 0);
    }
}
