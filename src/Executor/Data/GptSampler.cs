namespace Harness.Executor.Data;

/// <summary>
/// Cuts a token stream into samples of s + 1 tokens (inputs and their next-token labels, overlapping by one token,
/// as Megatron's GPTDataset) and serves them in an order shuffled once per epoch with the seed, so the data a run
/// sees depends only on (seed, position). <see cref="Position"/> (samples consumed) is what a checkpoint keeps.
/// </summary>
public sealed class GptSampler
{
    private readonly ITokenSource source;
    private readonly int seqLength;
    private readonly int seed;
    private int[]? order;
    private long orderEpoch = -1;

    public long SamplesPerEpoch { get; }
    public long Position { get; set; }

    public GptSampler(ITokenSource source, int seqLength, int seed)
    {
        this.source = source;
        this.seqLength = seqLength;
        this.seed = seed;
        SamplesPerEpoch = (source.TokenCount - 1) / seqLength;
        if (SamplesPerEpoch < 1)
            throw new ArgumentException($"the data holds {source.TokenCount} tokens, fewer than one sample of --seq-length {seqLength} plus one; use a shorter --seq-length or more data.");
    }

    /// <summary>Fills tokens[b·(s+1)] with the next b samples, row-major.</summary>
    public void Next(int batch, Span<long> tokens)
    {
        for (int i = 0; i < batch; i++)
        {
            long sample = SampleAt(Position++);
            source.Read(sample * seqLength, tokens.Slice(i * (seqLength + 1), seqLength + 1));
        }
    }

    private long SampleAt(long position)
    {
        long epoch = position / SamplesPerEpoch, within = position % SamplesPerEpoch;
        if (SamplesPerEpoch > int.MaxValue) return within; // synthetic data: every sample is already random
        if (epoch != orderEpoch)
        {
            // Fisher-Yates with SplitMix64 draws: the same order on every machine and runtime.
            order = Enumerable.Range(0, (int)SamplesPerEpoch).ToArray();
            ulong state = ((ulong)seed << 32) ^ (ulong)epoch;
            for (int i = order.Length - 1; i > 0; i--)
            {
                int j = (int)(SplitMix64.Hash(state++) % (ulong)(i + 1));
                (order[i], order[j]) = (order[j], order[i]);
            }
            orderEpoch = epoch;
        }
        return order![within];
    }
}
