using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// The random streams dropout draws from, as Megatron keeps them (tensor_parallel/random.py): a default stream seeded
/// alike on the tensor-parallel ranks of a pipeline stage (seed + 100·pipeline rank), for regions every rank holds in
/// full, and a model-parallel stream seeded per tensor-parallel rank (+ 2718 + tensor rank), for regions each rank holds
/// a different part of (a sequence-parallel block). Hidden and embedding dropout draw from the second under sequence
/// parallelism, else from the first, so a tensor-parallel model without it drops exactly what the serial model drops.
/// The streams are the run's own generators on its device (not libtorch's global one, which concurrent in-process ranks
/// would share), so recomputation can rewind them (<see cref="CheckpointFunction"/>) and replay the same masks.
/// </summary>
public sealed class DropoutRng : IDisposable
{
    private readonly Generator replicated, modelParallel;
    private readonly long replicatedSeed, modelParallelSeed;
    private readonly bool sequenceParallel, onGpu;

    /// <summary>Megatron's offset of the model-parallel seed (model_parallel_cuda_manual_seed).</summary>
    public const int ModelParallelOffset = 2718;

    /// <summary>Seeds between iterations: each iteration's masks come from its own seeds, so a run resumed from a
    /// checkpoint draws what the uninterrupted run drew without the generators' states being saved.</summary>
    private const long IterationStride = 1_000_003;

    public DropoutRng(int seed, int tensorRank, int pipelineRank, bool sequenceParallel, Device device)
    {
        replicatedSeed = seed + 100L * pipelineRank;
        modelParallelSeed = replicatedSeed + ModelParallelOffset + tensorRank;
        replicated = new Generator((ulong)replicatedSeed, device);
        modelParallel = new Generator((ulong)modelParallelSeed, device);
        (this.sequenceParallel, onGpu) = (sequenceParallel, device.type == TorchSharp.DeviceType.CUDA);
    }

    /// <summary>The stream of hidden and embedding dropout.</summary>
    public Generator Hidden => sequenceParallel ? modelParallel : replicated;

    /// <summary>The stream of attention dropout where the harness draws its mask (CPU: <see cref="AttentionWithDropout"/>).</summary>
    public Generator Attention => modelParallel;

    /// <summary>Seeds every stream for <paramref name="iteration"/>; on a GPU also libtorch's CUDA generator, from which the
    /// flash attention kernel draws its mask, with the model-parallel seed (attention is a model-parallel region).</summary>
    public void StartIteration(long iteration)
    {
        long offset = iteration * IterationStride;
        replicated.manual_seed(replicatedSeed + offset);
        modelParallel.manual_seed(modelParallelSeed + offset);
        if (onGpu) cuda.manual_seed(modelParallelSeed + offset);
    }

    /// <summary>Every stream's state, to rewind them for recomputation: outside any dispose scope (a recomputation runs
    /// after the forward's scope has ended), so the caller disposes them.</summary>
    public Tensor[] States() => [replicated.get_state().DetachFromDisposeScope(), modelParallel.get_state().DetachFromDisposeScope()];

    public void Restore(Tensor[] states)
    {
        replicated.set_state(states[0]);
        modelParallel.set_state(states[1]);
    }

    public void Dispose()
    {
        replicated.Dispose();
        modelParallel.Dispose();
    }
}

/// <summary>
/// Dropout (Srivastava et al. 2014) as in training: each element kept with probability 1 − p and scaled by 1/(1 − p),
/// the mask drawn from <paramref name="generator"/>. Autograd keeps the mask (one byte per element) for backward.
/// </summary>
public static class DropoutOp
{
    public static Tensor Apply(Tensor x, double p, Generator generator)
    {
        if (p <= 0) return x;
        using var draw = rand(x.shape, dtype: ScalarType.Float32, device: x.device, generator: generator);
        using var keep = draw.ge(p);
        return x.mul(keep).mul_(1 / (1 - p));
    }
}

/// <summary>
/// Causal attention with dropout on the probabilities, written out (softmax(QKᵀ/√d + causal mask), dropout, ·V) so the
/// mask comes from the harness's own stream: deterministic per rank and replayable under recomputation. For CPU runs,
/// whose models are small; on a GPU the flash kernel applies the dropout itself.
/// </summary>
public static class AttentionWithDropout
{
    /// <summary>q [b, heads, s, d]; k and v [b, groups, s, d], each group serving heads/groups query heads.</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, double p, Generator generator)
    {
        using var scope = NewDisposeScope();
        long heads = q.shape[1], groups = k.shape[1], s = q.shape[2], d = q.shape[3];
        if (groups != heads) (k, v) = (k.repeat_interleave(heads / groups, dim: 1), v.repeat_interleave(heads / groups, dim: 1));
        var scores = matmul(q, k.transpose(-2, -1)).mul_(1 / Math.Sqrt(d));
        using var future = ones(new[] { s, s }, dtype: ScalarType.Bool, device: q.device).triu(1);
        var probabilities = scores.masked_fill(future, double.NegativeInfinity).softmax(-1);
        return matmul(DropoutOp.Apply(probabilities, p, generator), v).MoveToOuterDisposeScope();
    }
}
