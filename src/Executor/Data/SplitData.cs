using Harness.Simulator.Specs;

namespace Harness.Executor.Data;

/// <summary>
/// The run's training and validation samples, as Megatron-core's BlendedMegatronDatasetBuilder builds its shares. With
/// --data-path, Megatron's --split (<see cref="DataSplit"/>) cuts every dataset of the blend into shares (whole documents,
/// contiguous in the .bin, so a share is one run of tokens: samples never cross into another share) and each share blends
/// its datasets' shares; without a split everything trains and there is no validation share. With --train-data-path (and
/// --valid-data-path) each share blends whole datasets of its own. A share of one dataset is a <see cref="GptDataset"/>, of
/// several a <see cref="BlendedDataset"/> sized by <see cref="BlendPlan"/>. Mock data is three disjoint regions of the
/// synthetic stream (the training share first, so it is the stream a run without a split trains on). The test share is held
/// out of training and not evaluated; --test-data-path's datasets are opened, so a missing one is refused.
/// </summary>
public sealed class SplitData : IDisposable
{
    /// <summary>Tokens per share of mock data: far more than a run reads (2^60).</summary>
    private const long MockShare = 1L << 60;

    private readonly IReadOnlyList<IDisposable> owned;

    public ISampleDataset Train { get; }

    /// <summary>The validation share; null without a split or --valid-data-path that gives it data.</summary>
    public ISampleDataset? Valid { get; }

    /// <summary>The blends of the shares read (train, then valid), for the run's record; empty for mock data.</summary>
    public IReadOnlyList<BlendedSplit> Blends { get; }

    private SplitData(ISampleDataset train, ISampleDataset? valid, IReadOnlyList<BlendedSplit> blends, IReadOnlyList<IDisposable> owned) =>
        (Train, Valid, Blends, this.owned) = (train, valid, blends, owned);

    /// <summary>Opens the data <paramref name="settings"/> name and cuts it. Throws FileNotFoundException or InvalidDataException for a
    /// missing or damaged dataset, ArgumentException for a share shorter than one sample of <paramref name="seqLength"/> + 1 tokens or a
    /// blend of prefixes alone shorter than the share's samples.</summary>
    public static SplitData Open(RunSettings settings, long vocabSize, int seqLength, long globalBatch)
    {
        if (settings.MockData)
        {
            var mock = new MockTokenSource(vocabSize, settings.Seed);
            GptDataset Region(long first) => new(settings.Split is null ? mock : new TokenWindow(mock, first, MockShare), seqLength, settings.Seed);
            return new SplitData(Region(0), settings.Split is { Valid: > 0 } ? Region(MockShare) : null, [], []);
        }
        var opened = new List<IDisposable>();
        try
        {
            var blends = new List<BlendedSplit>();
            ISampleDataset Build(DataSplit.Share share, DataBlend blend, Func<IndexedDataset, string, ITokenSource> cut)
            {
                var datasets = blend.Prefixes.Select(prefix =>
                {
                    var data = new IndexedDataset(prefix);
                    opened.Add(data);
                    return new GptDataset(cut(data, prefix), seqLength, settings.Seed, prefix);
                }).ToList();
                long target = BlendPlan.TargetSamples(share, settings, globalBatch);
                var plan = BlendPlan.Of(share, blend, datasets.Select(d => d.SamplesPerEpoch).ToList(), target);
                blends.Add(plan);
                if (datasets.Count == 1) return datasets[0];
                if (plan.Samples < target)
                    throw new ArgumentException($"the {plan.Split} blend of {blend} weighs its datasets by their size and holds one epoch of each, " +
                        $"{plan.Samples} samples, fewer than the {target} the run reads; give weights (W1 PREFIX1 W2 PREFIX2 ...) or more data.");
                return new BlendedDataset(datasets, plan.Datasets.Select(d => d.Weight).ToList());
            }
            ITokenSource Whole(IndexedDataset data, string prefix) => data;
            if (settings.PerSplitData)
            {
                var train = Build(DataSplit.Share.Train, settings.TrainDataPath!, Whole);
                var valid = settings.ValidDataPath is { } v ? Build(DataSplit.Share.Valid, v, Whole) : null;
                foreach (var prefix in settings.TestDataPath?.Prefixes ?? []) opened.Add(new IndexedDataset(prefix));
                return new SplitData(train, valid, blends, opened);
            }
            if (settings.Split is not { } split) return new SplitData(Build(DataSplit.Share.Train, settings.DataPath!, Whole), null, blends, opened);
            Func<IndexedDataset, string, ITokenSource> Cut(DataSplit.Share share) => (data, prefix) => Share(data, prefix, split, share, seqLength);
            return new SplitData(Build(DataSplit.Share.Train, settings.DataPath!, Cut(DataSplit.Share.Train)),
                split.Valid > 0 ? Build(DataSplit.Share.Valid, settings.DataPath!, Cut(DataSplit.Share.Valid)) : null, blends, opened);
        }
        catch
        {
            foreach (var data in opened) data.Dispose();
            throw;
        }
    }

    /// <summary>The tokens of the documents <paramref name="share"/> holds.</summary>
    private static TokenWindow Share(IndexedDataset data, string prefix, DataSplit split, DataSplit.Share share, int seqLength)
    {
        long documents = data.DocumentIndices.Length - 1;
        var (first, end) = split.Documents(share, documents);
        long start = TokenOffset(data, data.DocumentIndices[first]), stop = TokenOffset(data, data.DocumentIndices[end]);
        if (stop - start < seqLength + 1)
            throw new ArgumentException($"--split {split} gives the {share.ToString().ToLowerInvariant()} share documents [{first}, {end}) of {documents} in {prefix}: " +
                $"{stop - start} tokens, fewer than one sample of --seq-length {seqLength} plus one; give it a larger weight or use more data.");
        return new TokenWindow(data, start, stop - start);
    }

    private static long TokenOffset(IndexedDataset data, long sequence) =>
        sequence < data.Sizes.Length ? data.Pointers[sequence] / data.ElementSize : data.TokenCount;

    public void Dispose()
    {
        foreach (var data in owned) data.Dispose();
    }
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
