using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>Activation bytes per layer per micro-batch against Korthikanti et al. 2022, Table 2 (all six rows).</summary>
public class ActivationsTests
{
    // GPT-3 175B shape (Korthikanti's own example): s 2048, h 12288, a 96; b 1, t 8; no flash attention.
    private static readonly ModelSpec Gpt = ModelPresets.All["gpt-145.6b"];
    private const double s = 2048, b = 1, h = 12288, a = 96, t = 8;
    private static readonly RunDescription NoFlash = new(AttentionBackend: AttentionBackend.Unfused, Precision: Precision.Bf16);

    private static double Bytes(RunDescription c) =>
        Activations.PerLayerKept(Activations.Layer(Gpt, c), c.RecomputeOrNone, 10);

    private static void Exact(double expected, double actual) => Assert.Equal(expected, actual, expected * 1e-12);

    [Fact]
    public void NoParallelism() =>
        Exact(s * b * h * (34 + 5 * a * s / h), Bytes(NoFlash));

    [Fact]
    public void TensorParallel() =>
        Exact(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)), Bytes(NoFlash with { TensorParallel = 8 }));

    [Fact]
    public void TensorAndSequenceParallel() =>
        Exact(s * b * h * (34 / t + 5 * a * s / (h * t)), Bytes(NoFlash with { TensorParallel = 8, SequenceParallel = true }));

    [Fact]
    public void TensorParallelWithSelectiveRecompute() =>
        Exact(s * b * h * (10 + 24 / t), Bytes(NoFlash with { TensorParallel = 8, Recompute = RecomputeSpec.Selective }));

    [Fact]
    public void TensorAndSequenceParallelWithSelectiveRecompute() =>
        Exact(34 * s * b * h / t, Bytes(NoFlash with { TensorParallel = 8, SequenceParallel = true, Recompute = RecomputeSpec.Selective }));

    [Fact]
    public void FullRecomputeKeepsOnlyTheLayerInput() =>
        Exact(2 * s * b * h, Bytes(NoFlash with { TensorParallel = 8, Recompute = RecomputeSpec.FullUniform() }));

    [Fact]
    public void FlashAttentionRemovesTheScoreTerms()
    {
        // With flash attention only the fp32 log-sum-exp per head and token remains of the a·s² terms.
        var c = new RunDescription(TensorParallel: 8, AttentionBackend: AttentionBackend.Flash, Precision: Precision.Bf16);
        Exact(s * b * h * (10 + 24 / t) + 4 * a / t * s * b, Bytes(c));
    }

    [Fact]
    public void UlyssesKeepsAttentionsOwnOutputBesideTheProjectionsInput()
    {
        // Llama-7B, s 4096, b 1, t 1, c 4: each rank holds s/4 tokens. The block is the one counted tensor by tensor below
        // with Megatron's fused SwiGLU (16h + 6f + 4a bytes per token) on s/4 tokens; Ulysses' attention keeps Q, K, V, O and
        // the log-sum-exp of all s tokens of a/4 heads, as many bytes, and its O is a tensor apart from the output
        // projection's input: 2h more.
        var m = ModelPresets.All["llama-7b"];
        double hh = 4096, f = 11008, aa = 32, tokens = 4096 / 4.0;
        var c = new RunDescription(ContextParallel: 4, Precision: Precision.Bf16);
        Exact(tokens * (16 * hh + 6 * f + 4 * aa), Activations.Layer(m, c).Saved);
        Exact(tokens * (18 * hh + 6 * f + 4 * aa), Activations.Layer(m, c with { ContextParallelComm = ContextParallelCommType.A2a }).Saved);
    }

    [Fact]
    public void LlamaBlockCountedTensorByTensor()
    {
        // Llama-7B, s 4096, b 1, no TP, Megatron's unfused SwiGLU (--no-bias-swiglu-fusion): norm inputs and outputs 4·2h,
        // Q K V 3·2h (MHA), context 2h, FC1 output 2·2f, SiLU output 2f, product 2f, plus the fp32 log-sum-exp 4a:
        // 16h + 8f + 4a bytes per token.
        var m = ModelPresets.All["llama-7b"];
        double hh = 4096, f = 11008, aa = 32, ss = 4096;
        var unfused = new RunDescription(Precision: Precision.Bf16, FusedSwiGlu: false);
        var layer = Activations.Layer(m, unfused);
        Exact(ss * (16 * hh + 8 * f + 4 * aa), layer.Saved);
        // Megatron-Kwai's recompute drops the two norm outputs (2·2h) and the two SwiGLU outputs (2·2f).
        var kwai = Activations.Layer(m, unfused with { Recompute = RecomputeSpec.Kwai });
        Exact(ss * (12 * hh + 4 * f + 4 * aa), kwai.Saved);
        Exact(layer.Saved, kwai.AllTensors);
        // Megatron's fused SwiGLU (its default) keeps FC1's output and, as FC2's input, the product, not SiLU's output:
        // 2f bytes fewer per token; under Megatron-Kwai's recompute it keeps the same FC1 output and drops the product.
        var fused = new RunDescription(Precision: Precision.Bf16);
        Exact(ss * (16 * hh + 6 * f + 4 * aa), Activations.Layer(m, fused).Saved);
        Exact(ss * (12 * hh + 4 * f + 4 * aa), Activations.Layer(m, fused with { Recompute = RecomputeSpec.Kwai }).Saved);
    }

    /// <summary>Megatron's fused SwiGLU reads gate and up and writes the product (3 elements per FFN channel and token); the
    /// unfused SiLU and product read and write 5: 2·e·f bytes more per token, forward.</summary>
    [Fact]
    public void TheFusedSwiGluMovesTwoFewerElementsPerChannel()
    {
        var m = ModelPresets.All["llama-7b"];
        var gpu = GpuPresets.All["h100-sxm"];
        var fused = new RunDescription(Precision: Precision.Bf16);
        double extra = ComputeTime.Layer(m, fused with { FusedSwiGlu = false }, gpu).ElementwiseForward - ComputeTime.Layer(m, fused, gpu).ElementwiseForward;
        Assert.Equal(ComputeTime.MemoryBound(m.SeqLength * 2.0 * 2 * m.FfnHiddenSize, gpu), extra, 12);
    }

    [Fact]
    public void GroupedQueryAttentionShrinksKeysAndValues()
    {
        // Llama2-70B: 8 KV groups of head size 128 instead of 64: K and V are 2·1024 instead of 2·8192 wide.
        var m = ModelPresets.All["llama2-70b"];
        var mha = m with { NumQueryGroups = m.NumAttentionHeads };
        double diff = Activations.Layer(mha, new RunDescription(Precision: Precision.Bf16)).Saved - Activations.Layer(m, new RunDescription(Precision: Precision.Bf16)).Saved;
        Exact(m.SeqLength * 2.0 * 2 * (8192 - 1024), diff);
    }

    [Fact]
    public void BlockRecomputeKeepsEverythingOfTheOtherLayers()
    {
        var m = ModelPresets.All["llama-7b"];
        var c = new RunDescription(Recompute: new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 2), Precision: Precision.Bf16);
        var layer = Activations.Layer(m, c);
        Exact((2 * layer.Input + 6 * layer.Saved) / 8, Activations.PerLayerKept(layer, c.RecomputeOrNone, 8));
    }
}
