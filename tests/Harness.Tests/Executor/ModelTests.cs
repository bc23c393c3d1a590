using TorchSharp;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

public class ModelTests
{
    internal static ModelSpec Tiny(Activation act = Activation.SwiGlu, Normalization norm = Normalization.RmsNorm,
        PositionEmbedding pos = PositionEmbedding.Rotary, bool tied = false, int groups = 2) =>
        new("tiny", 2, 32, 4, groups, 48, 64, 16, act, norm, pos, tied, HiddenDropout: 0, AttentionDropout: 0);

    internal static (GptModel Model, ParamAndGradBuffer Buffer) Build(ModelSpec spec, ScalarType dtype, RecomputeSpec? recompute = null, int seed = 1,
        bool gradientAccumulationFusion = false)
    {
        TorchRuntime.Initialize();
        // Generators of the test's own (WeightInit): other tests draw from libtorch's global one concurrently.
        var model = new GptModel(new TransformerConfig(spec, CPU, dtype, SerialTensorParallel.Instance, recompute, InitSeed: seed));
        return (model, new ParamAndGradBuffer(model, dtype, gradientAccumulationFusion: gradientAccumulationFusion));
    }

    [Fact]
    public void ParameterCountMatchesTheSpecAndParametersAreViewsOfTheFlatBuffer()
    {
        foreach (var spec in new[] { Tiny(), Tiny(Activation.Gelu, Normalization.LayerNorm, PositionEmbedding.Learned, tied: true, groups: 4) })
        {
            var (model, buffer) = Build(spec, ScalarType.Float32);
            Assert.Equal(spec.TotalParameters, buffer.Count);
            Assert.Equal(spec.TotalParameters, model.parameters().Sum(p => p.numel()));
            // Writing the flat buffer changes the model's parameters: they share its storage.
            using (no_grad())
            {
                using var half = 0.5f.ToScalar();
                buffer.Params.fill_(half);
            }
            Assert.All(model.parameters(), p => Assert.Equal(0.5f, p.mean().item<float>()));
        }
    }

    [Fact]
    public void GradientsLandInTheFlatBuffer()
    {
        var (model, buffer) = Build(Tiny(), ScalarType.Float32);
        var tokens = randint(0, 64, new long[] { 2, 16 });
        model.forward(tokens, tokens).backward();
        Assert.True(buffer.MainGrads.abs().sum().item<float>() > 0);
        // Each parameter's .grad is still the view autograd accumulated into.
        foreach (var (_, p, offset) in buffer.Layout)
            Assert.True(p.grad!.reshape(-1).equal(buffer.MainGrads.narrow(0, offset, p.numel())).all().item<bool>());
    }
}

public class MixedPrecisionTests
{
    /// <summary>--optimizer sgd under bf16: the step updates the float32 master weights (first step: the momentum buffer is the
    /// gradient, w - lr·g) and the bf16 weights are the master cast, as under Adam.</summary>
    [Fact]
    public void SgdStepsTheFloat32MasterAndCastsItToTheBf16Weights()
    {
        var (model, buffer) = ModelTests.Build(ModelTests.Tiny(), ScalarType.BFloat16);
        var tokens = randint(0, 64, new long[] { 2, 16 });
        model.forward(tokens, tokens).backward();
        buffer.AccumulateMicroBatch();
        using var before = buffer.Master.clone();
        using var grads = buffer.MainGrads.clone();
        using var sgd = new ReplicatedOptimizer(buffer, new Sgd(new AdamSettings(WeightDecay: 0, ClipGrad: 0), momentum: 0.9));
        sgd.ClipAndStep(0.5);
        Assert.True(grads.abs().sum().item<float>() > 0);
        using var step = (-0.5).ToScalar();
        Assert.True(buffer.Master.equal(before.add(grads, alpha: step)).all().item<bool>());
        Assert.True(sgd.States[0].equal(grads).all().item<bool>());
        Assert.True(buffer.Master.to(ScalarType.BFloat16).equal(buffer.Params).all().item<bool>());
    }

    [Fact]
    public void Bf16ParametersFloat32MasterAndGradientAccumulation()
    {
        var (model, buffer) = ModelTests.Build(ModelTests.Tiny(), ScalarType.BFloat16);
        Assert.True(buffer.MixedPrecision);
        Assert.Equal(ScalarType.Float32, buffer.Master.dtype);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        // The master weights start as exact copies of the bf16 parameters (Megatron's Float16OptimizerWithFloat16Params).
        Assert.True(buffer.Master.to(ScalarType.BFloat16).equal(buffer.Params).all().item<bool>());
        var a = randint(0, 64, new long[] { 2, 16 });
        var b = randint(0, 64, new long[] { 2, 16 });
        model.forward(a, a).backward();
        var first = buffer.Grads.to(ScalarType.Float32);
        buffer.AccumulateMicroBatch();
        Assert.Equal(0f, buffer.Grads.abs().sum().to(ScalarType.Float32).item<float>());
        model.forward(b, b).backward();
        var second = buffer.Grads.to(ScalarType.Float32);
        buffer.AccumulateMicroBatch();
        // Float32 accumulation of the two micro-batches' bf16 gradients.
        Assert.True(buffer.MainGrads.equal(first.Plus(second)).all().item<bool>());
        using var adam = new ReplicatedOptimizer(buffer, new AdamW(new AdamSettings()));
        adam.ClipAndStep(1e-3);
        Assert.True(buffer.Master.to(ScalarType.BFloat16).equal(buffer.Params).all().item<bool>());
    }
}
