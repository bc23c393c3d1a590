using TorchSharp;
using Harness.Executor.Native;
using Harness.Executor.TensorParallel;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using Harness.Tests.Parallel;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// Dropout as Megatron trains GPT: the masks' statistics, their streams, recomputation drawing the same masks again, a
/// resumed iteration drawing what the uninterrupted one drew, and tensor parallelism without sequence parallelism
/// dropping exactly what the serial model drops.
/// </summary>
[Collection("training")]
public class DropoutTests
{
    private static bool Equal(Tensor a, Tensor b) => a.allclose(b, rtol: 0, atol: 0);

    [Fact]
    public void KeepsOneMinusPScaledAndDrawsTheSameMaskForTheSameDraw()
    {
        TorchRuntime.Initialize();
        var x = ones(200_000, dtype: ScalarType.Float64).requires_grad_();
        using var a = new DropoutRng(3, 0, 0, false, CPU);
        using var b = new DropoutRng(3, 0, 0, false, CPU);
        a.StartIteration(5);
        b.StartIteration(5);
        var y = DropoutOp.Apply(x, 0.25, a.NextHidden());
        using var zero = 0.ToScalar();
        double dropped = y.eq(zero).to(ScalarType.Float64).mean().item<double>();
        Assert.InRange(dropped, 0.245, 0.255);                          // 200k draws: 5 standard deviations is 0.5%
        Assert.Equal(1 / 0.75, y.max().item<double>(), 12);             // the kept ones, scaled
        Assert.True(Equal(y, DropoutOp.Apply(x, 0.25, b.NextHidden()))); // same seed, iteration and draw: same mask
        y.sum().backward();
        Assert.True(Equal(x.grad!, y.detach()));                         // d/dx (mask·x/(1-p)) = mask/(1-p)
        Assert.Same(x, DropoutOp.Apply(x, 0, a.NextHidden()));            // p = 0 is the identity
        // The next draw, another iteration, another tensor-parallel rank's model-parallel stream: other masks.
        var second = DropoutOp.Apply(x, 0.25, a.NextHidden());
        Assert.False(Equal(y, second));
        b.StartIteration(6);
        Assert.False(Equal(y, DropoutOp.Apply(x, 0.25, b.NextHidden())));
        using var rank1 = new DropoutRng(3, 1, 0, true, CPU);
        a.StartIteration(5);
        rank1.StartIteration(5);
        Assert.False(Equal(DropoutOp.Apply(x, 0.25, a.NextModelParallel()), DropoutOp.Apply(x, 0.25, rank1.NextModelParallel())));
        // Rewound to where it was, a stream draws the same mask again; a resumed iteration starts where the first run did.
        a.StartIteration(5);
        var draws = a.Draws;
        var first = DropoutOp.Apply(x, 0.25, a.NextHidden());
        a.Rewind(draws);
        Assert.True(Equal(first, DropoutOp.Apply(x, 0.25, a.NextHidden())));
        Assert.True(Equal(first, y));
    }

    [Theory]
    [InlineData(RecomputeGranularity.Full, RecomputeMethod.Uniform, 1)]
    [InlineData(RecomputeGranularity.Full, RecomputeMethod.Uniform, 2)]
    [InlineData(RecomputeGranularity.Full, RecomputeMethod.Block, 1)]
    [InlineData(RecomputeGranularity.Selective, RecomputeMethod.Uniform, 1)]
    public void RecomputationDrawsTheSameMasksAgain(RecomputeGranularity recompute, RecomputeMethod method, int layers)
    {
        // GPT with hidden and attention dropout (CPU: attention's mask from the harness's stream), float64: the gradients
        // with recomputation equal those without, which they could not if the recomputed forward dropped other elements.
        var spec = Reference.Gpt();
        var batch = Reference.Batches(spec, 1, 2)[0];
        Dictionary<string, double[]> Gradients(RecomputeSpec r)
        {
            using var rng = new DropoutRng(11, 0, 0, false, CPU);
            using var model = new GptModel(new TransformerConfig(spec, CPU, ScalarType.Float64, SerialTensorParallel.Instance, r,
                InitSeed: 4, HiddenDropout: 0.3, AttentionDropout: 0.3, Dropout: rng));
            rng.StartIteration(0);
            int s = spec.SeqLength;
            model.forward(batch[.., ..s], batch[.., 1..]).backward();
            return model.named_parameters().ToDictionary(n => n.name, n => n.parameter.grad!.data<double>().ToArray());
        }
        var plain = Gradients(RecomputeSpec.None);
        var recomputed = Gradients(new RecomputeSpec(recompute, method, layers));
        foreach (var (name, g) in plain)
            Assert.True(g.Zip(recomputed[name]).All(p => Math.Abs(p.First - p.Second) <= 1e-12 * (1 + Math.Abs(p.First))), name);
    }

    /// <summary>The norms' bias gradients sum the two ranks' all-reduced input gradients in another order than the serial
    /// GEMM does; with a fifth of the elements dropped (the rest scaled by 1.25) their entries cancel more, and on a Xeon
    /// with AVX-512 kernels one reaches 1.06e-5 relative in float32. A mask that differed from the serial model's would put
    /// the error near 1, so 3e-5 still tells a wrong mask from rounding.</summary>
    [Fact]
    public void Tp2WithoutSequenceParallelDropsWhatTheSerialModelDrops() =>
        ParallelRun.AssertMatchesSerial(Reference.Gpt() with { HiddenDropout = 0.2 }, new RunDescription(TensorParallel: 2, MicroBatch: 1, GlobalBatch: 4, Precision: Precision.Fp32),
            gradientTolerance: 3e-5);

    [Fact]
    public void ProbabilitiesOutsideZeroToOneAreUserErrors() =>
        Assert.Contains("--hidden-dropout is 1", TrainingRun.Check(Reference.Gpt() with { HiddenDropout = 1 }, new RunDescription(Precision: Precision.Fp32),
            new RunSettings(MockData: true), worldSize: 1).Single());
}
