using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Offload;
using TorchSharp;
using Harness.Executor.Data;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// The random streams dropout draws from, as Megatron keeps them (tensor_parallel/random.py): a default stream seeded
/// alike on the tensor-parallel ranks of a pipeline stage (seed + 100·pipeline rank), for regions every rank holds in
/// full, and a model-parallel stream seeded per tensor-parallel rank (+ 2718 + tensor rank), for regions each rank holds
/// a different part of (attention's heads, a sequence-parallel block). Hidden and embedding dropout draw from the second
/// under sequence parallelism, else from the first, so a tensor-parallel model without it drops exactly what the serial
/// model drops; attention dropout draws from the second.
/// Each draw is keyed by (stream, iteration, draw number within the iteration): <see cref="Next"/> seeds the generator
/// the draw uses from that key, so a resumed run draws what the uninterrupted one drew and recomputation rewinds a
/// stream by resetting its draw number (<see cref="Draws"/>, <see cref="Rewind"/>). On a GPU the generator is libtorch's
/// CUDA one (the flash attention kernel draws from it; TorchSharp cannot give a kernel another), reseeded per draw; on
/// the CPU each stream has its own generator, as concurrent in-process ranks must not share libtorch's global one.
/// </summary>
public sealed class DropoutRng : IDisposable
{
    /// <summary>Megatron's offset of the model-parallel seed (model_parallel_cuda_manual_seed).</summary>
    public const int ModelParallelOffset = 2718;

    private readonly long replicatedSeed, modelParallelSeed;
    private readonly Generator? replicated, modelParallel;
    private readonly bool sequenceParallel;
    private long iteration, replicatedDraws, modelParallelDraws;

    public DropoutRng(int seed, int tensorRank, int pipelineRank, bool sequenceParallel, Device device)
    {
        replicatedSeed = seed + 100L * pipelineRank;
        modelParallelSeed = replicatedSeed + ModelParallelOffset + tensorRank;
        this.sequenceParallel = sequenceParallel;
        if (device.type != TorchSharp.DeviceType.CUDA)
            (replicated, modelParallel) = (new Generator((ulong)replicatedSeed), new Generator((ulong)modelParallelSeed));
    }

    /// <summary>While set, nothing is dropped (Megatron's evaluate runs the model in eval mode): <see cref="Rate"/> is 0.</summary>
    public bool Evaluating { get; set; }

    /// <summary>The probability a dropout of probability <paramref name="p"/> drops with: none without streams or while evaluating.</summary>
    public static double Rate(DropoutRng? rng, double p) => rng is null || rng.Evaluating ? 0 : p;

    /// <summary>Starts <paramref name="i"/>'s draws (each iteration's masks are its own, whatever ran before).</summary>
    public void StartIteration(long i) => (iteration, replicatedDraws, modelParallelDraws) = (i, 0, 0);

    /// <summary>Seeds the generator for the next draw of hidden or embedding dropout and returns it (null: libtorch's CUDA one).</summary>
    public Generator? NextHidden() => HiddenGenerator(NextHiddenSeed());

    /// <summary>The seed of the next draw of hidden dropout (the model-parallel stream's key under sequence parallelism), for a
    /// draw applied later (<see cref="PendingDropout"/>).</summary>
    public long NextHiddenSeed() => sequenceParallel ? NextModelParallelKey() : Mix(replicatedSeed, iteration, replicatedDraws++);

    /// <summary>Seeds the hidden dropout's generator with <paramref name="seed"/> (<see cref="NextHiddenSeed"/>) and returns it
    /// (null: libtorch's CUDA one).</summary>
    public Generator? HiddenGenerator(long seed) => Reseed(sequenceParallel ? modelParallel : replicated, seed);

    /// <summary>Seeds the generator for the next draw of attention dropout and returns it (null: libtorch's CUDA one).</summary>
    public Generator? NextModelParallel() => Seed(NextModelParallelKey(), 0);

    /// <summary>The key of the model-parallel stream's next draw, for a draw made of parts (ring attention's blocks), each
    /// seeded by <see cref="Seed"/> from the key and its part number, in forward and again in backward.</summary>
    public long NextModelParallelKey() => Mix(modelParallelSeed, iteration, modelParallelDraws++);

    /// <summary>Seeds the model-parallel stream's generator for part <paramref name="part"/> of the draw
    /// <paramref name="key"/> names and returns it (null: libtorch's CUDA one, seeded).</summary>
    public Generator? Seed(long key, long part) => Reseed(modelParallel, part == 0 ? key : Mix(key, part, 0));

    /// <summary>Where each stream is within the iteration, to <see cref="Rewind"/> to.</summary>
    public (long Replicated, long ModelParallel) Draws => (replicatedDraws, modelParallelDraws);

    public void Rewind((long Replicated, long ModelParallel) draws) => (replicatedDraws, modelParallelDraws) = draws;

    /// <summary>Seeds a stream's own generator, or on a GPU libtorch's CUDA one (returning null), for one draw.</summary>
    private static Generator? Reseed(Generator? own, long seed)
    {
        if (own is null) { cuda.manual_seed(seed); return null; }
        own.manual_seed(seed);
        return own;
    }

    /// <summary>A 63-bit seed from (stream seed, iteration, draw): SplitMix64 over their combination, so nearby keys give
    /// unrelated seeds.</summary>
    private static long Mix(long seed, long iteration, long draw) => unchecked((long)(SplitMix64.Hash(
        (ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)iteration * 0xD1B54A32D192ED03UL + (ulong)draw * 0x8CB92BA72F3D8DD7UL) >> 1));

    public void Dispose()
    {
        replicated?.Dispose();
        modelParallel?.Dispose();
    }
}

/// <summary>
/// A hidden dropout drawn where Megatron draws it (its seed taken from the stream after its sublayer ran) and applied where
/// the sublayer's output joins the residual stream: inside the fused residual add + norm (Fused.AddNormFunction, which drops
/// with Philox keyed by the seed), or by libtorch's dropout from the stream's generator seeded with it.
/// </summary>
public sealed record PendingDropout(DropoutDraw Draw, DropoutRng Streams)
{
    /// <summary>y dropped by libtorch's dropout (a new tensor; y is left alone).</summary>
    public Tensor Apply(Tensor y) => DropoutOp.Apply(y, Draw.P, Streams.HiddenGenerator(Draw.Seed), saved: true);

    /// <summary>The next hidden dropout of <paramref name="streams"/> at probability <paramref name="p"/>; null where nothing
    /// is dropped (no streams, evaluation, p = 0).</summary>
    public static PendingDropout? Next(DropoutRng? streams, double p) =>
        DropoutRng.Rate(streams, p) is > 0 and var rate ? new PendingDropout(new DropoutDraw(rate, streams!.NextHiddenSeed()), streams) : null;
}

/// <summary>
/// Dropout (Srivastava et al. 2014) as in training: each element kept with probability 1 − p and scaled by 1/(1 − p),
/// the mask drawn from <paramref name="generator"/> (null: libtorch's generator of the tensor's device). Autograd keeps
/// the mask (one byte per element) for backward.
/// </summary>
public static class DropoutOp
{
    /// <param name="saved">Hidden dropout (the embedding's, and the attention's and MLP's outputs'): the mask autograd keeps is
    /// handed to the model chunk being recorded (<see cref="SavedActivations"/>), as Megatron-Kwai's pack hook sees it. Where
    /// libtorch's dropout kernel draws (a GPU), its mask stays inside the operator, out of reach.</param>
    public static Tensor Apply(Tensor x, double p, Generator? generator, bool saved = false)
    {
        if (p <= 0) return x;
        // libtorch's own generator (a GPU, reseeded for this draw by DropoutRng): its fused dropout kernel draws, masks and
        // scales in one pass and keeps a one-byte mask.
        return generator is null ? nn.functional.dropout(x, p, training: true) : Drawn(x, p, generator, saved);
    }

    /// <summary>Dropout with the mask drawn as float32 uniforms from <paramref name="generator"/> (null: the device's libtorch
    /// generator): the same seed and shape give the same mask, also for another tensor of that shape (ring attention's
    /// backward applies its forward's masks to gradients). <paramref name="saved"/>: the one-byte mask, which autograd keeps
    /// for the product's backward, is recorded with the chunk's saved activations.</summary>
    public static Tensor Drawn(Tensor x, double p, Generator? generator, bool saved = false)
    {
        if (p <= 0) return x;
        using var draw = rand(x.shape, dtype: ScalarType.Float32, device: x.device, generator: generator);
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar drop = p.ToScalar(), rescale = (1 / (1 - p)).ToScalar();
        using var keep = draw.ge(drop);
        if (saved) SavedActivations.Save(keep);
        return x.mul(keep).mul_(rescale);
    }
}

/// <summary>
/// Causal attention with dropout on the probabilities, written out (softmax(QKᵀ/√d + causal mask), dropout, ·V) so the
/// mask comes from the harness's own stream: deterministic per rank and replayable under recomputation. For CPU runs,
/// whose models are small; on a GPU the flash kernel applies the dropout itself.
/// </summary>
public static class AttentionWithDropout
{
    /// <summary>q [b, heads, sq, d]; k and v [b, groups, sk, d], each group serving heads/groups query heads;
    /// <paramref name="attended"/> [sq, sk] true where a query sees a key (null: causal, sq = sk).</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, double p, Generator generator, Tensor? attended = null)
    {
        using var scope = NewDisposeScope();
        long heads = q.shape[1], groups = k.shape[1], d = q.shape[3];
        if (groups != heads) (k, v) = (k.repeat_interleave(heads / groups, dim: 1), v.repeat_interleave(heads / groups, dim: 1));
        using Scalar scale = (1 / Math.Sqrt(d)).ToScalar(), masked = double.NegativeInfinity.ToScalar();
        var scores = MatrixProduct.Of(q, k.transpose(-2, -1)).mul_(scale);
        var hidden = attended is null ? ones(new[] { q.shape[2], k.shape[2] }, dtype: ScalarType.Bool, device: q.device).triu(1) : attended.logical_not();
        var probabilities = scores.masked_fill(hidden, masked).softmax(-1);
        return MatrixProduct.Of(DropoutOp.Apply(probabilities, p, generator), v).MoveToOuterDisposeScope();
    }
}
