using Harness.Simulator.Specs;

namespace Harness.Executor.Data;

/// <summary>
/// The run's data cut by Megatron's --split (<see cref="DataSplit"/>) into its training and validation shares, each a token
/// stream of its own that a <see cref="GptSampler"/> cuts into samples: for an indexed dataset the shares' documents (whole
/// documents, contiguous in the .bin, so a share is one run of tokens: samples never cross into another share), for mock
/// data three disjoint regions of the synthetic stream (the training share first, so it is the stream a run without a
/// split trains on). Without a split everything trains and there is no validation share. Megatron's test share is held
/// out of training and not evaluated.
/// </summary>
public sealed class SplitData : IDisposable
{
    /// <summary>Tokens per share of mock data: far more than a run reads (2^60).</summary>
    private const long MockShare = 1L << 60;

    private readonly IDisposable? owner;

    public ITokenSource Train { get; }

    /// <summary>The validation share; null without a split that gives it documents.</summary>
    public ITokenSource? Valid { get; }

    private SplitData(ITokenSource train, ITokenSource? valid, IDisposable? owner) => (Train, Valid, this.owner) = (train, valid, owner);

    /// <summary>Opens the data <paramref name="settings"/> name and cuts it. Throws FileNotFoundException or InvalidDataException for a
    /// missing or damaged dataset, ArgumentException for a share shorter than one sample of <paramref name="seqLength"/> + 1 tokens.</summary>
    public static SplitData Open(RunSettings settings, long vocabSize, int seqLength)
    {
        if (settings.MockData)
        {
            var mock = new MockTokenSource(vocabSize, settings.Seed);
            if (settings.Split is null) return new SplitData(mock, null, null);
            return new SplitData(new TokenWindow(mock, 0, MockShare),
                settings.Split.Valid > 0 ? new TokenWindow(mock, MockShare, MockShare) : null, null);
        }
        var data = new IndexedDataset(settings.DataPath!);
        try
        {
            if (settings.Split is not { } split) return new SplitData(data, null, data);
            var train = Share(data, split, DataSplit.Share.Train, seqLength);
            var valid = split.Valid > 0 ? Share(data, split, DataSplit.Share.Valid, seqLength) : null;
            return new SplitData(train, valid, data);
        }
        catch
        {
            data.Dispose();
            throw;
        }
    }

    /// <summary>The tokens of the documents <paramref name="share"/> holds.</summary>
    private static TokenWindow Share(IndexedDataset data, DataSplit split, DataSplit.Share share, int seqLength)
    {
        long documents = data.DocumentIndices.Length - 1;
        var (first, end) = split.Documents(share, documents);
        long start = TokenOffset(data, data.DocumentIndices[first]), stop = TokenOffset(data, data.DocumentIndices[end]);
        if (stop - start < seqLength + 1)
            throw new ArgumentException($"--split {split} gives the {share.ToString().ToLowerInvariant()} share documents [{first}, {end}) of {documents}: " +
                $"{stop - start} tokens, fewer than one sample of --seq-length {seqLength} plus one; give it a larger weight or use more data.");
        return new TokenWindow(data, start, stop - start);
    }

    private static long TokenOffset(IndexedDataset data, long sequence) =>
        sequence < data.Sizes.Length ? data.Pointers[sequence] / data.ElementSize : data.TokenCount;

    public void Dispose() => owner?.Dispose();
}

/// <summary>Tokens [offset, offset + count) of another stream, as a stream of their own.</summary>
public sealed class TokenWindow(ITokenSource source, long offset, long count) : ITokenSource
{
    public long TokenCount => count;

    public void Read(long at, Span<long> destination)
    {
        if (at < 0 || at + destination.Length > count)
            throw new ArgumentOutOfRangeException(nameof(at), $"tokens [{at}, {at + destination.Length}) lie outside the window's {count}");
        source.Read(offset + at, destination);
    }
}
