namespace Harness.Executor.Data;

/// <summary>Samples of s + 1 tokens by index (Megatron's MegatronDataset __getitem__): a dataset's, or a blend's.</summary>
public interface ISampleDataset
{
    /// <summary>Copies sample <paramref name="index"/>'s s + 1 tokens into <paramref name="tokens"/>.</summary>
    void Read(long index, Span<long> tokens);
}

/// <summary>
/// A token stream cut into samples of s + 1 tokens (inputs and their next-token labels, overlapping by one token, as
/// Megatron's GPTDataset) served in an order shuffled once per epoch with the seed, so sample k depends only on (seed, k)
/// and the dataset has as many epochs as are read.
/// </summary>
public sealed class GptDataset : ISampleDataset
{
    private readonly int seqLength;
    private readonly int seed;
    private int[]? order;
    private long orderEpoch = -1;

    public ITokenSource Tokens { get; }
    public long SamplesPerEpoch { get; }

    /// <param name="name">What the data is, for the sentence a stream shorter than one sample throws.</param>
    public GptDataset(ITokenSource tokens, int seqLength, int seed, string name = "the data")
    {
        Tokens = tokens;
        this.seqLength = seqLength;
        this.seed = seed;
        SamplesPerEpoch = (tokens.TokenCount - 1) / seqLength;
        if (SamplesPerEpoch < 1)
            throw new ArgumentException($"{name} holds {tokens.TokenCount} tokens, fewer than one sample of --seq-length {seqLength} plus one; use a shorter --seq-length or more data.");
    }

    public void Read(long index, Span<long> tokens) => Tokens.Read(SampleAt(index) * seqLength, tokens[..(seqLength + 1)]);

    private long SampleAt(long index)
    {
        long epoch = index / SamplesPerEpoch, within = index % SamplesPerEpoch;
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

/// <summary>
/// The samples a run consumes, in order, from a dataset (Megatron's MegatronPretrainingSampler over its top-level dataset):
/// <see cref="Position"/> (samples consumed) is what a checkpoint keeps.
/// </summary>
public sealed class GptSampler(ISampleDataset dataset, int seqLength)
{
    public long Position { get; set; }

    /// <summary>Fills tokens[b·(s+1)] with the next b samples, row-major.</summary>
    public void Next(int batch, Span<long> tokens)
    {
        for (int i = 0; i < batch; i++)
            dataset.Read(Position++, tokens.Slice(i * (seqLength + 1), seqLength + 1));
    }
}
