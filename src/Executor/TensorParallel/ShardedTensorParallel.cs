using Harness.Executor.Distributed;
using Harness.Executor.Fused;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// The tensor-parallel seam for rank <c>tp.Rank</c> of <c>tp.Size</c>, in one of three regimes:
/// - Megatron (Shoeybi et al. 2019): f before every column-parallel linear and the output layer, g after every
///   row-parallel linear and the embedding lookup;
/// - sequence parallel (Korthikanti et al. 2022): activations outside the linears are split along the sequence;
///   the column-parallel input is all-gathered (reduce-scatter in backward), the row-parallel output
///   reduce-scattered (all-gather in backward), the embeddings scattered before the first layer;
/// - CAAT-Net partial sync with factor p (<see cref="PartialAllReduce"/>): the row-parallel output is partially
///   all-reduced, column-parallel inputs (and the output layer's) take no f, and one f enters the decoder.
/// Weights are made at full shape by the caller's init and sliced here, so rank r holds exactly its slice of the
/// serial model built from the same seed. <see cref="NeedsGradAllReduce"/> names the parameters whose gradients
/// are partial per rank under sequence parallelism or partial sync (norms, row-parallel biases) and must be
/// all-reduced over the group before the optimizer (Megatron's finalize_model_grads for sequence_parallel params;
/// CAAT-Net's norm-weight all-reduce).
/// </summary>
public sealed class ShardedTensorParallel : ITensorParallel
{
    private readonly ICommunicator tp;
    private readonly HashSet<Parameter> shards = new(ReferenceEqualityComparer.Instance);

    /// <param name="syncFactor">Null: Megatron's full synchronization. A value in [0, 1]: CAAT-Net's p (1 gives the same numbers as null by another path).</param>
    public ShardedTensorParallel(ICommunicator tp, bool sequenceParallel = false, double? syncFactor = null)
    {
        if (sequenceParallel && syncFactor is not null)
            throw new ArgumentException("partial synchronization replaces the sequence-parallel collectives; choose one.");
        if (syncFactor is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(syncFactor), syncFactor, "the sync factor p must be in [0, 1].");
        this.tp = tp;
        SequenceParallel = sequenceParallel;
        SyncFactor = syncFactor;
    }

    public int WorldSize => tp.Size;
    public bool SequenceParallel { get; }
    public double? SyncFactor { get; }
    public ICommunicator Group => tp;

    public LinearLayer ColumnParallelLinear(long inFeatures, long outFeatures, bool bias, InitMethod init, int stride = 1)
    {
        RequireDivisible("output features", outFeatures / stride);
        using var full = init([outFeatures, inFeatures]);
        Func<Tensor, Tensor> inputMap = SequenceParallel ? x => Mappings.GatherFromSequenceParallelRegion(x, tp)
            : SyncFactor is null ? x => Mappings.CopyToTensorParallelRegion(x, tp)
            : x => x;
        return Track(ParallelLinear.Column(Shards.Rows(full, tp.Rank, tp.Size, stride), bias, inputMap));
    }

    public LinearLayer RowParallelLinear(long inFeatures, long outFeatures, bool bias, InitMethod init)
    {
        RequireDivisible("input features", inFeatures);
        using var full = init([outFeatures, inFeatures]);
        long synchronized = PartialAllReduce.SynchronizedChannels(SyncFactor ?? 1, outFeatures);
        Func<Tensor, Tensor> outputMap = SequenceParallel ? y => Mappings.ReduceScatterToSequenceParallelRegion(y, tp)
            : SyncFactor is null ? y => Mappings.ReduceFromTensorParallelRegion(y, tp)
            : y => tp.Size == 1 ? y : PartialAllReduce.Apply(y, tp, synchronized);
        var linear = ParallelLinear.Row(Shards.Columns(full, tp.Rank, tp.Size), bias, outputMap);
        // Only the weight is a shard; the bias is replicated and added after the reduction.
        foreach (var (name, p) in linear.named_parameters())
            if (name == "weight") shards.Add(p);
        return linear;
    }

    public Parameter VocabParallelWeight(long vocabSize, long hiddenSize, InitMethod init)
    {
        RequireDivisible("vocabulary size", vocabSize);
        using var full = init([vocabSize, hiddenSize]);
        var p = new Parameter(Shards.Rows(full, tp.Rank, tp.Size));
        shards.Add(p);
        return p;
    }

    /// <summary>Megatron's VocabParallelEmbedding: look up the ids in this rank's rows, zero the others, sum over ranks.</summary>
    public Tensor EmbeddingLookup(Tensor tokens, Tensor weight)
    {
        long partition = weight.shape[0], start = tp.Rank * partition;
        using var scope = NewDisposeScope();
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar first = start.ToScalar(), end = (start + partition).ToScalar(), zero = 0.ToScalar();
        var outside = tokens.lt(first).logical_or_(tokens.ge(end));
        var local = (tokens - first).masked_fill_(outside, zero);
        var rows = EmbeddingFunction.Rows(weight, local);
        var partial = rows.masked_fill(outside.unsqueeze(-1), zero);
        return Mappings.ReduceFromTensorParallelRegion(partial, tp).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// On one rank the kernel adds the positions itself; under tensor parallelism it gathers this rank's rows, zero for the
    /// other ranks' ids as <see cref="EmbeddingLookup"/> masks them (a zero row passes the all-reduce exactly), and the
    /// positions are added after the all-reduce, as Megatron adds them to the reduced word embeddings.
    /// </summary>
    public Tensor FusedEmbeddingLookup(Tensor tokens, Tensor weight, Tensor position, Tensor positionIds)
    {
        if (tp.Size == 1) return EmbeddingFunction.Apply(tokens, weight, 0, position, positionIds);
        using var scope = NewDisposeScope();
        var words = Mappings.ReduceFromTensorParallelRegion(EmbeddingFunction.Apply(tokens, weight, tp.Rank * weight.shape[0]), tp);
        return words.Plus(position.index_select(0, positionIds)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// What the embeddings go through before the first layer: the sequence-parallel scatter, CAAT-Net's one
    /// f (its gradient all-reduce stands for the per-layer ones it removed), or nothing.
    /// </summary>
    public Tensor EnterDecoder(Tensor embeddings) =>
        SequenceParallel ? Mappings.ScatterToSequenceParallelRegion(embeddings, tp)
        : SyncFactor is not null ? Mappings.CopyToTensorParallelRegion(embeddings, tp)
        : embeddings;

    public Tensor Logits(Tensor hidden, Tensor weight)
    {
        using var scope = NewDisposeScope();
        var input = SequenceParallel ? Mappings.GatherFromSequenceParallelRegion(hidden, tp)
            : SyncFactor is null ? Mappings.CopyToTensorParallelRegion(hidden, tp)
            : hidden;
        return nn.functional.linear(input, weight).MoveToOuterDisposeScope();
    }

    public Tensor CrossEntropy(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var flat = logits.reshape(-1, logits.shape[^1]);
        return (tp.Size == 1
            ? nn.functional.cross_entropy(flat.to(ScalarType.Float32), labels.reshape(-1), reduction: nn.Reduction.None)
            : VocabParallelCrossEntropy.Apply(flat, labels.reshape(-1), tp)).MoveToOuterDisposeScope();
    }

    /// <summary>Whether <paramref name="p"/> was sliced over the group (false: every rank holds all of it).</summary>
    public bool IsShard(Parameter p) => shards.Contains(p);

    /// <summary>
    /// Whether a replicated decoder parameter's gradient differs per rank in this regime (sequence parallel or
    /// partial sync) and must be summed over the group: everything that is not a shard except the position
    /// table, whose gradient arrives already summed.
    /// </summary>
    public bool NeedsGradAllReduce(string name, Parameter p) =>
        (SequenceParallel || SyncFactor is not null) && tp.Size > 1 && !IsShard(p) && !name.EndsWith("position_embeddings");

    private T Track<T>(T module) where T : nn.Module
    {
        foreach (var p in module.parameters()) shards.Add(p);
        return module;
    }

    private void RequireDivisible(string what, long n)
    {
        if (n % tp.Size != 0)
            throw new ArgumentException($"{what} {n} is not divisible by --tensor-model-parallel-size {tp.Size}.");
    }
}
