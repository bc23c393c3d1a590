using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

public class FlopsTests
{
    [Fact]
    public void Gpt175bMatchesNarayananFormula()
    {
        // GPT-3 175B: L 96, h 12288, a 96, s 2048, V 51200. Narayanan et al. 2021: model FLOPs per token
        // 72·L·h²·(1 + s/(6h)) + 6·h·V, and with full recomputation 96·L·h²·(1 + s/(6h) + V/(16·L·h)).
        var m = new ModelSpec("gpt-175b", 96, 12288, 96, 96, 4 * 12288, 51200, 2048,
            Activation.Gelu, Normalization.LayerNorm, PositionEmbedding.Learned, true, 0.1, 0.1);
        double L = 96, h = 12288, s = 2048, V = 51200;
        double model = 72 * L * h * h * (1 + s / (6 * h)) + 6 * h * V;
        double full = 96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h));
        Assert.Equal(model, Flops.ModelFlopsPerToken(m, AttentionFlopCounting.Full), 1e-9 * model);
        var cfg = new RunDescription(Recompute: RecomputeSpec.FullUniform());
        Assert.Equal(full, Flops.HardwareFlopsPerToken(m, cfg, AttentionFlopCounting.Full), 1e-9 * full);
    }

    [Fact]
    public void Llama7bMatchesKwaiFormula()
    {
        // Megatron-Kwai: 3·[L·(8h² + 6·h·ffn + 2·s·h) + 2·h·V] at s 12288, V 32004.
        var m = ModelPresets.All["llama-7b"] with { SeqLength = 12288 };
        double L = 32, h = 4096, f = 11008, s = 12288, V = 32004;
        double expected = 3 * (L * (8 * h * h + 6 * h * f + 2 * s * h) + 2 * h * V);
        Assert.Equal(expected, Flops.ModelFlopsPerToken(m), 1e-9 * expected);
    }
}
