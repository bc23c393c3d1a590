using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using Harness.Tests.Parallel;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// Megatron's fusion switches the executor runs: --no-norm-fusion (the legacy float32 norms), and --no-masked-softmax-fusion
/// --no-bias-gelu-fusion --no-bias-dropout-fusion (F.gelu in place of the fused tanh bias-GeLU; the masked softmax and
/// bias-dropout-add are libtorch's operators either way), by hand on tiny tensors and in parallel layouts against the serial run.
/// </summary>
public class UnfusedKernelTests
{
    /// <summary>
    /// By hand, in bf16 with eps 1e-5: RMSNorm of [3, 4] is [3, 4] / sqrt(12.5), 0.8485 and 1.1314, which bf16 (8 significant
    /// bits) rounds to 0.84765625 and 1.1328125; LayerNorm of [1, 2, 6] (mean 3, biased variance 14/3) is
    /// [-0.9258, -0.4629, 1.3887], in bf16 -0.92578125, -0.462890625, 1.390625. The weight (ones) and bias (zeros) are exact.
    /// </summary>
    [Fact]
    public void UnfusedNormsAreTheLegacyFloat32OperatorsCastBack()
    {
        TorchRuntime.Initialize();
        using var rms = Norms.Create(Normalization.RmsNorm, 2, 1e-5, ScalarType.BFloat16, CPU, fused: false);
        using var rmsOut = rms.forward(tensor(new[] { 3f, 4f }).to(ScalarType.BFloat16)).to(ScalarType.Float32);
        Assert.Equal([0.84765625f, 1.1328125f], rmsOut.data<float>().ToArray());
        using var layer = Norms.Create(Normalization.LayerNorm, 3, 1e-5, ScalarType.BFloat16, CPU, fused: false);
        using var layerOut = layer.forward(tensor(new[] { 1f, 2f, 6f }).to(ScalarType.BFloat16)).to(ScalarType.Float32);
        Assert.Equal([-0.92578125f, -0.462890625f, 1.390625f], layerOut.data<float>().ToArray());
    }

    /// <summary>
    /// By hand at x = 1: the fused bias-GeLU is tanh's approximation, 0.5·(1 + tanh(0.79788456·1.044715)) = 0.8411920, and its
    /// gradient 0.5·(1 − t²)(0.79788456 + 0.1070322243) + 0.5·(1 + t) = 1.0829641; erf's GeLU (--no-bias-gelu-fusion) is
    /// 0.8413447, 1.5e-4 away, which float32 tells apart.
    /// </summary>
    [Fact]
    public void TheFusedBiasGeluIsMegatronsTanhApproximationAndItsDerivative()
    {
        TorchRuntime.Initialize();
        using var x = tensor(new[] { 1f }).requires_grad_();
        using var y = Mlp.BiasGelu(x);
        y.backward();
        Assert.Equal(0.8411920, y.item<float>(), 6);
        Assert.Equal(1.0829641, x.grad!.item<float>(), 5);
        using var erf = nn.functional.gelu(tensor(new[] { 1f }));
        Assert.Equal(0.8413447, erf.item<float>(), 6);
    }

    /// <summary>GPT (biases, LayerNorm, GeLU) with every fusion switch off, under TP2 with sequence parallelism and DP2 with
    /// the distributed optimizer: the serial run with the same switches, within float32's 1e-5; and the switches change the
    /// run (the serial gradients differ from the fused ones' bits: at the tiny model's small activations tanh's GeLU is
    /// within 1e-6 of erf's, below the printed losses).</summary>
    [Theory]
    [InlineData("tp2-sp")]
    [InlineData("dp2-distributed-optimizer")]
    public void UnfusedLayoutsMatchTheUnfusedSerialRun(string layout)
    {
        var spec = Reference.Gpt();
        var config = (layout == "tp2-sp"
                ? new RunDescription(TensorParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4)
                : new RunDescription(DataParallel: 2, ZeroStage: 1, MicroBatch: 1, GlobalBatch: 4))
            with { Precision = Precision.Fp32, FusedNorm = false, FusedElementwise = false };
        Assert.Empty(ExecutorSupport.Refusals(config));
        ParallelRun.AssertMatchesSerial(spec, config);
        var batches = Reference.Batches(spec, 2, 4);
        float[] Grads(Reference.Run r) => Reference.Concatenated(r.LastGrads.OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => g.Value));
        Assert.NotEqual(Grads(Reference.Serial(spec, batches)), Grads(Reference.Serial(spec, batches, fusedNorm: false, fusedElementwise: false)));
    }
}
