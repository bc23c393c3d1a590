namespace Harness.Executor.Data;

/// <summary>
/// Synthetic tokens for --mock-data (as Megatron's MockGPTDataset): token k is a SplitMix64 hash of (seed, k)
/// modulo the vocabulary, so any position is reproducible without state and costs nothing to produce.
/// </summary>
public sealed class MockTokenSource(long vocabSize, long seed) : ITokenSource
{
    public long TokenCount => long.MaxValue / 2;

    public void Read(long offset, Span<long> destination)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = (long)(SplitMix64.Hash((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)(offset + i)) % (ulong)vocabSize);
    }
}

/// <summary>SplitMix64 (Steele, Lea and Flood 2014): a stateless hash, fixed across runtimes, for reproducible data order.</summary>
internal static class SplitMix64
{
    public static ulong Hash(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
