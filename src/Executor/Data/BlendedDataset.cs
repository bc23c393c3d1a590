namespace Harness.Executor.Data;

/// <summary>
/// Megatron-core's BlendedDataset (megatron/core/datasets/blended_dataset.py, NVIDIA/Megatron-LM d98e8a6): sample k is sample
/// <see cref="BlendingIndices.At"/>(k) of one of the datasets, so each dataset's share of any prefix of the samples stays within
/// a sample of its weight's.
/// </summary>
public sealed class BlendedDataset(IReadOnlyList<ISampleDataset> datasets, IReadOnlyList<double> normalizedWeights) : ISampleDataset
{
    private readonly BlendingIndices indices = new(normalizedWeights);

    public void Read(long index, Span<long> tokens)
    {
        var (dataset, sample) = indices.At(index);
        datasets[dataset].Read(sample, tokens);
    }
}
