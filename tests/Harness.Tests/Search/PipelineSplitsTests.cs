using Harness.Search;
using Harness.Simulator.Specs;

namespace Harness.Tests.Search;

/// <summary>The splits of the layers over the pipeline stages the search tries (<see cref="PipelineSplits"/>).</summary>
public class PipelineSplitsTests
{
    private static readonly ModelSpec Llama7b = ModelPresets.All["llama-7b"];

    [Fact]
    public void TheEndDeficitIsTheEmbeddingsWeightInLayers()
    {
        // Llama-7B: the 32004 x 4096 table (131.1M) against a 202.4M layer: under one layer. Llama 3 8B's 128256 x 4096 table
        // (525.3M) against its 218.1M layer (4h² with 8 of 32 query groups: 2h² + 2h²/4 = 41.9M; SwiGLU 3·4096·14336 = 176.2M):
        // 2.4 layers, so 3.
        Assert.Equal(1, PipelineSplits.EndDeficit(Llama7b));
        var llama3_8b = Llama7b with { VocabSize = 128256, FfnHiddenSize = 14336, NumQueryGroups = 8 };
        Assert.Equal(3, PipelineSplits.EndDeficit(llama3_8b));
    }

    [Fact]
    public void SplitsKeepTheEndsWithinTheDeficitOfTheMiddleStages()
    {
        // 30 layers on 4 stages (deficit 1): middle 7 with ends 8, or middle 8 with ends 7; no even split. With interleaving,
        // the embedding and the loss counted as layers (32 on 4).
        var bothCounted = new PipelineSplit(AccountForEmbedding: true, AccountForLoss: true);
        Assert.Equal([bothCounted, new(8, 8), new(7, 7)], PipelineSplits.Of(Llama7b with { NumLayers = 30 }, 4));
        // 32 on 4: the even split, and one layer moved from one end to the other.
        Assert.Equal([default, new(9, 7), new(7, 9)], PipelineSplits.Of(Llama7b, 4));
        // Llama 3 405B (Dubey et al. 2024): 126 layers on 16 stages, 7 on the first and last, 8 on each middle stage.
        var llama3 = Llama7b with { NumLayers = 126, HiddenSize = 16384, NumAttentionHeads = 128, NumQueryGroups = 8, FfnHiddenSize = 53248, VocabSize = 128256 };
        Assert.Equal([bothCounted, new(7, 7)], PipelineSplits.Of(llama3, 16));
        // Two stages: the first named, the two at most one layer apart (or the embedding or loss counted: 32 on 2);
        // one stage: only the whole model.
        Assert.Equal([new(AccountForEmbedding: true), new(AccountForLoss: true), new(15), new(16)], PipelineSplits.Of(Llama7b with { NumLayers = 31 }, 2));
        Assert.Equal([default(PipelineSplit)], PipelineSplits.Of(Llama7b, 1));
        // Every split the search tries is one Megatron accepts.
        foreach (int p in new[] { 2, 3, 4, 5, 6, 7, 8, 16 })
            foreach (var split in PipelineSplits.Of(Llama7b with { NumLayers = 30 }, p))
                Assert.Empty(split.ToConfig(p).Validate(Llama7b with { NumLayers = 30 }, p));
    }

    [Fact]
    public void ListedValuesAreTriedWhereMegatronAcceptsThem()
    {
        // 30 layers on 4 stages: first 6 and last 6 leave 9 + 9; first 5 and last 6 leave 19 for 2 stages, which Megatron refuses.
        var model = Llama7b with { NumLayers = 30 };
        Assert.Equal([new PipelineSplit(6, 6)], PipelineSplits.Of(model, 4, [5, 6], [6]));
        Assert.Equal([default(PipelineSplit)], PipelineSplits.Of(Llama7b, 4, [0], null));
    }
}
