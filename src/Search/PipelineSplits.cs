using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>A split of the layers over the pipeline stages in Megatron's flags: --decoder-first-pipeline-num-layers,
/// --decoder-last-pipeline-num-layers, --account-for-embedding-in-pipeline-split, --account-for-loss-in-pipeline-split
/// (default: the even split).</summary>
public readonly record struct PipelineSplit(
    int? LayersInFirstStage = null, int? LayersInLastStage = null, bool AccountForEmbedding = false, bool AccountForLoss = false)
{
    /// <summary>Whether the first or last stage holds its own number of layers (then without interleaving).</summary>
    public bool Uneven => LayersInFirstStage is not null || LayersInLastStage is not null;

    /// <summary>Whether the embedding or the loss counts as a layer (then with interleaving only, in the search).</summary>
    public bool CountsEnds => AccountForEmbedding || AccountForLoss;

    /// <summary>The split on <paramref name="pipelineParallel"/> stages, the rest of the description its default.</summary>
    public RunDescription ToConfig(int pipelineParallel) => Apply(new RunDescription(PipelineParallel: pipelineParallel));

    /// <summary><paramref name="config"/> with this split.</summary>
    public RunDescription Apply(RunDescription config) => config with
    {
        LayersInFirstPipelineStage = LayersInFirstStage,
        LayersInLastPipelineStage = LayersInLastStage,
        AccountForEmbeddingInPipelineSplit = AccountForEmbedding,
        AccountForLossInPipelineSplit = AccountForLoss,
    };
}

/// <summary>
/// The splits of the layers over p pipeline stages the search tries (--decoder-first-pipeline-num-layers and
/// --decoder-last-pipeline-num-layers, each left out where its stage takes the middle stages' count). The first stage also holds the
/// embedding and the last the output layer and loss, so the even split leaves them the heaviest; and where p does not
/// divide the layers Megatron needs the first or last stage to take the difference. So besides the even split (where p
/// divides L): every split whose middle stages hold k layers each and whose first and last hold k − a and k − b, for
/// a and b from −D to D, D (<see cref="EndDeficit"/>) the embedding's (or output layer's) weight in layers, rounded up: the
/// most a stage can shed before it is lighter than a middle one whatever the layer costs, and as many it can take on where
/// that is the only way to split L over p. Llama 3 405B's 126 layers on 16 stages (Dubey et al. 2024, section 3.3.2: one
/// layer fewer on the first and last) are such a split (k 8, a = b = 1). With two stages there is no middle: the first
/// holds f and the last L − f, at most D apart.
/// Uneven stages have one model chunk per rank (Megatron interleaves them only by --num-virtual-stages-per-pipeline-rank).
/// Interleaved, the first and last virtual stages can hold one layer fewer by counting the embedding or the loss as a
/// layer (--account-for-embedding-in-pipeline-split, --account-for-loss-in-pipeline-split): those splits (where p divides
/// the layers so counted) are tried with interleaving only, since without it they are uneven splits above.
/// Where the user lists values for either layers flag, the search tries exactly those (0: that flag not given) that
/// Megatron accepts, and no counted ends.
/// </summary>
public static class PipelineSplits
{
    /// <summary>The layers the larger of the embedding and the output layer weigh, in parameters, rounded up (at least 1).</summary>
    public static int EndDeficit(ModelSpec model) =>
        Math.Max(1, (int)Math.Ceiling(Math.Max(ModelState.EmbeddingParametersPerRank(model, 1), ModelState.OutputParametersPerRank(model, 1, 2))
                                      / ModelState.LayerParametersPerRank(model, 1)));

    /// <summary>Every split of the model's layers over <paramref name="p"/> stages the search tries, the even one first.</summary>
    public static IEnumerable<PipelineSplit> Of(ModelSpec model, int p, IReadOnlyList<int>? firstOnly = null, IReadOnlyList<int>? lastOnly = null)
    {
        int layers = model.NumLayers;
        if (firstOnly is not null || lastOnly is not null)
        {
            foreach (int first in firstOnly ?? [0])
                foreach (int last in lastOnly ?? [0])
                {
                    var split = new PipelineSplit(first > 0 ? first : null, last > 0 ? last : null);
                    if (split.ToConfig(p).Validate(model, p).Count == 0) yield return split;
                }
            yield break;
        }
        if (layers % p == 0) yield return default;
        if (p == 1) yield break;
        foreach (var counted in new PipelineSplit[] { new(AccountForEmbedding: true), new(AccountForLoss: true), new(AccountForEmbedding: true, AccountForLoss: true) })
            if ((layers + (counted.AccountForEmbedding ? 1 : 0) + (counted.AccountForLoss ? 1 : 0)) % p == 0) yield return counted;
        int deficit = EndDeficit(model);
        if (p == 2)
        {
            // The first stage's layers f and the last's L − f, at most the deficit apart from the middle of the model.
            for (int first = Math.Max(1, (layers - deficit + 1) / 2); first <= Math.Min(layers - 1, (layers + deficit) / 2); first++)
                if (2 * first != layers) yield return new PipelineSplit(first);
            yield break;
        }
        // p·k − a − b = L with |a|, |b| ≤ D: k from ⌈(L − 2D)/p⌉ while p·k − L ≤ 2D; a stage holding k is left unnamed.
        for (int k = Math.Max(1, (layers - 2 * deficit + p - 1) / p); p * k - layers <= 2 * deficit; k++)
            for (int a = -deficit; a <= deficit; a++)
            {
                int b = p * k - layers - a;
                if (Math.Abs(b) > deficit || (a == 0 && b == 0) || k - a < 1 || k - b < 1) continue;
                yield return new PipelineSplit(a != 0 ? k - a : null, b != 0 ? k - b : null);
            }
    }
}
