using Harness.Simulator.Specs;

namespace Harness.Executor.Data;

/// <summary>One dataset of a share's blend, as summary.json records it: its prefix, its normalized weight, the samples the blend
/// plans to draw from it and those Megatron builds for it (with its margin).</summary>
public sealed record BlendedSource(string Prefix, double Weight, long Samples, long Built);

/// <summary>A share's blend (train or valid): its size in samples and its datasets.</summary>
public sealed record BlendedSplit(string Split, long Samples, IReadOnlyList<BlendedSource> Datasets);

/// <summary>
/// How Megatron-core sizes a share and its blend (NVIDIA/Megatron-LM d98e8a6). The share's target in samples
/// (megatron/training/training.py get_train_valid_test_num_samples): train --train-iters · global batch; valid
/// (--train-iters / --eval-interval + 1) · --eval-iters · global batch; test --eval-iters · global batch. A weighted blend
/// (megatron/core/datasets/blended_megatron_dataset_builder.py _get_size_per_split_per_dataset) plans ceil(target · w_i) samples
/// from dataset i, builds ceil(ceil(target · w_i) · 1.005) of them (mid_level_dataset_surplus, 0.005, so the greedy order never
/// runs a dataset dry) and is as long as the planned samples together. A blend of prefixes alone weighs each dataset by its
/// samples in one epoch and is as long as the target, capped at one epoch of every dataset. One dataset is not blended.
/// </summary>
public static class BlendPlan
{
    private const double MidLevelDatasetSurplus = 0.005;

    public static long TargetSamples(DataSplit.Share share, RunSettings settings, long globalBatch) => share switch
    {
        DataSplit.Share.Train => settings.TrainIters * globalBatch,
        DataSplit.Share.Valid => (settings.TrainIters / settings.EvalInterval + 1) * settings.EvalIters * globalBatch,
        _ => settings.EvalIters * globalBatch,
    };

    /// <param name="epochSamples">Each dataset's samples in one epoch (the weights of a blend of prefixes alone).</param>
    public static BlendedSplit Of(DataSplit.Share share, DataBlend blend, IReadOnlyList<long> epochSamples, long target)
    {
        string name = share.ToString().ToLowerInvariant();
        if (blend.Prefixes.Count == 1) return new(name, target, [new BlendedSource(blend.Prefixes[0], 1, target, target)]);
        if (blend.Weights is null)
        {
            var byLength = BlendingIndices.Normalize(epochSamples.Select(n => (double)n).ToArray());
            return new(name, Math.Min(target, epochSamples.Sum()),
                blend.Prefixes.Select((p, i) => new BlendedSource(p, byLength[i], epochSamples[i], epochSamples[i])).ToList());
        }
        // The builder normalizes the weights to size the datasets, and BlendedDataset normalizes them again to order the samples.
        var weights = BlendingIndices.Normalize(blend.Weights);
        var ordering = BlendingIndices.Normalize(weights);
        var planned = weights.Select(w => (long)Math.Ceiling(target * w)).ToArray();
        return new(name, planned.Sum(), blend.Prefixes.Select((p, i) =>
            new BlendedSource(p, ordering[i], planned[i], (long)Math.Ceiling(planned[i] * (1 + MidLevelDatasetSurplus)))).ToList());
    }
}
