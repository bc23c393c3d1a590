using static Harness.Executor.Native.HeldScalars;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>The weights a model draws at random (norm weights start at one and biases at zero: nothing is drawn for them).</summary>
public enum WeightRole { WordEmbeddings, PositionEmbeddings, OutputLayer, LinearQkv, LinearProj, LinearFc1, LinearFc2 }

/// <summary>
/// Which weight of the serial model a draw is for: its role and its global layer number (−1 for the embeddings and the
/// output layer), so a pipeline stage, a virtual stage or a tensor-parallel shard names the same weight as the serial model.
/// </summary>
public readonly record struct WeightKey(WeightRole Role, int Layer = -1);

/// <summary>
/// Initial weights that do not depend on the layout: every weight is drawn at its full shape on the CPU (Megatron's
/// --use-cpu-initialization, megatron/core/tensor_parallel/layers.py _initialize_affine_weight_cpu: the full weight from
/// one generator, then each tensor-parallel rank keeps its slice) from a generator of its own, seeded by the run's seed
/// and the weight's <see cref="WeightKey"/>. Megatron draws from one generator per pipeline stage (seeded by seed +
/// 100·pipeline rank), so its stages do not hold the serial model's weights; a generator per weight makes every stage,
/// virtual stage and shard hold exactly its part of the serial model's, and a run's losses differ from the serial run's
/// only by the layout's arithmetic. The vocabulary tables are drawn in blocks of <see cref="VocabBlock"/> rows, one
/// generator each, so tables padded to different sizes (Megatron pads to a multiple of 128·t) agree on every row both hold.
/// </summary>
public static class WeightInit
{
    /// <summary>Rows per generator of a vocabulary table: Megatron's default padding multiple, so a padded table is whole blocks.</summary>
    public const int VocabBlock = VocabPadding.MegatronDefault;

    /// <summary>N(0, std²) at <paramref name="shape"/> in <paramref name="dtype"/> on the CPU, the same for a key and seed in every layout.</summary>
    public static Tensor Normal(long seed, WeightKey key, double std, long[] shape, ScalarType dtype)
    {
        if (key.Role is not (WeightRole.WordEmbeddings or WeightRole.OutputLayer)) return Draw(Seed(seed, key, 0), std, shape, dtype);
        long rows = shape[0], blocks = (rows + VocabBlock - 1) / VocabBlock;
        var parts = new Tensor[blocks];
        for (long b = 0; b < blocks; b++) parts[b] = Draw(Seed(seed, key, b), std, [VocabBlock, .. shape[1..]], dtype);
        using var all = cat(parts);
        foreach (var p in parts) p.Dispose();
        // Held in a variable until the clone returns: TorchSharp passes a temporary's handle only, and a finalizer could free it mid-call.
        using var table = all.narrow(0, 0, rows);
        return table.clone();
    }

    private static Tensor Draw(ulong seed, double std, long[] shape, ScalarType dtype)
    {
        using var generator = new Generator(seed);
        // torch.normal(0, std) as TorchSharp computes it (randn · std + 0 · 1), with the numbers as Scalars held until the calls
        // return (HeldScalars says why).
        using Scalar scale = std.ToScalar(), mean = 0.0.ToScalar();
        return randn(shape, dtype: dtype, generator: generator).mul_(scale).add_(mean, One);
    }

    /// <summary>The generator's seed: SplitMix64 (Steele, Lea and Flood 2014) over the run's seed, the role, the layer and the block,
    /// so nearby keys give unrelated streams.</summary>
    private static ulong Seed(long seed, WeightKey key, long block)
    {
        ulong h = Mix((ulong)seed);
        h = Mix(h ^ (ulong)key.Role);
        h = Mix(h ^ (ulong)(key.Layer + 1));
        return Mix(h ^ (ulong)block);
    }

    private static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }
}
