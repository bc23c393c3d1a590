namespace Harness.Executor.Fused;

/// <summary>
/// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the counter-based
/// generator the fused residual add + norm drops with (add_norm.cuh's philox4x32_10 and dropout_factors, the same function):
/// on the host, for the known-answer tests of Random123 and for `harness kernel-check`, which rebuilds a kernel's dropout mask
/// from its seed.
/// </summary>
public static class Philox
{
    /// <summary>The 4 words of block (c0..c3) under key (k0, k1): ten rounds, the key bumped by the Weyl constants between them.</summary>
    public static (uint X, uint Y, uint Z, uint W) Block(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            if (round > 0) (k0, k1) = (unchecked(k0 + 0x9E3779B9u), unchecked(k1 + 0xBB67AE85u));
            ulong p0 = 0xD2511F53UL * c0, p1 = 0xCD9E8D57UL * c2;
            (c0, c1, c2, c3) = ((uint)(p1 >> 32) ^ c1 ^ k0, (uint)p1, (uint)(p0 >> 32) ^ c3 ^ k1, (uint)p0);
        }
        return (c0, c1, c2, c3);
    }

    /// <summary>
    /// Dropout's factor for each of <paramref name="count"/> elements from element 0 of a tensor on: <see cref="DropoutDraw.Scale"/>
    /// where kept, 0 where dropped. Element e's uniform is word e mod 4 of block (e / 4 low, high, 0, 0)
    /// under key (seed low, high), as (word >> 8)·2^-24, kept when at least p (in float32, as the kernel compares).
    /// </summary>
    public static float[] DropoutFactors(long count, DropoutDraw draw)
    {
        float p = draw.KernelP, scale = draw.Scale;
        ulong seed = (ulong)draw.Seed;
        var factors = new float[count];
        for (long n = 0; n * 4 < count; n++)
        {
            var (x, y, z, w) = Block((uint)n, (uint)((ulong)n >> 32), 0, 0, (uint)seed, (uint)(seed >> 32));
            for (int lane = 0; lane < 4 && n * 4 + lane < count; lane++)
            {
                uint word = lane switch { 0 => x, 1 => y, 2 => z, _ => w };
                factors[n * 4 + lane] = (word >> 8) * (1f / (1 << 24)) >= p ? scale : 0f;
            }
        }
        return factors;
    }
}
