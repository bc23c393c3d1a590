namespace Harness.Executor.Data;

/// <summary>
/// Megatron-core's blending order (megatron/core/datasets/helpers.cpp build_blending_indices, NVIDIA/Megatron-LM d98e8a6):
/// blended sample k comes from the dataset whose count falls furthest behind its share, the largest
/// w_i · max(k, 1) − n_i (the first such dataset on a tie), and is that dataset's sample n_i, after which n_i grows by one.
/// Megatron fills the arrays for a given size at once; the order of the first k samples does not depend on the size, so here
/// it is walked forward as the samples are read, and walked again from 0 only when a reader seeks back.
/// </summary>
public sealed class BlendingIndices
{
    private readonly double[] weights;
    private readonly long[] counts;
    private long next;

    /// <param name="normalizedWeights">The weights as BlendedDataset holds them (<see cref="Normalize"/>d).</param>
    public BlendingIndices(IReadOnlyList<double> normalizedWeights)
    {
        weights = normalizedWeights.ToArray();
        counts = new long[weights.Length];
    }

    /// <summary>Blended sample <paramref name="index"/>'s dataset and its sample in that dataset.</summary>
    public (int Dataset, long Sample) At(long index)
    {
        if (index < next)
        {
            Array.Clear(counts);
            next = 0;
        }
        while (next < index) counts[Choose(next++)]++;
        int dataset = Choose(next++);
        return (dataset, counts[dataset]++);
    }

    private int Choose(long index)
    {
        double at = Math.Max(index, 1.0);
        int best = 0;
        double max = weights[0] * at - counts[0];
        for (int i = 1; i < weights.Length; i++)
        {
            double error = weights[i] * at - counts[i];
            if (error > max) (max, best) = (error, i);
        }
        return best;
    }

    /// <summary>Megatron's normalize (megatron/core/datasets/utils.py): each weight over their numpy.sum, in float64.</summary>
    public static double[] Normalize(IReadOnlyList<double> weights)
    {
        double sum = NumpySum(weights.ToArray());
        return weights.Select(w => w / sum).ToArray();
    }

    /// <summary>numpy's float64 sum, whose order of additions decides the last bit of the normalized weights: pairwise
    /// (numpy/core/src/umath/loops_utils.h pairwise_sum): below 8 terms one after another; up to 128, eight running sums
    /// combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)) and the remainder added in turn; above, the two halves
    /// (cut at a multiple of 8) summed apart.</summary>
    public static double NumpySum(ReadOnlySpan<double> a)
    {
        if (a.Length < 8)
        {
            double res = 0;
            foreach (var x in a) res += x;
            return res;
        }
        if (a.Length <= 128)
        {
            Span<double> r = stackalloc double[8];
            a[..8].CopyTo(r);
            int i = 8;
            for (; i < a.Length - a.Length % 8; i += 8)
                for (int j = 0; j < 8; j++) r[j] += a[i + j];
            double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for (; i < a.Length; i++) res += a[i];
            return res;
        }
        int half = a.Length / 2;
        half -= half % 8;
        return NumpySum(a[..half]) + NumpySum(a[half..]);
    }
}
