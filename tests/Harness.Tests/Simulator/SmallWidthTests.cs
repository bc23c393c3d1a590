using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests.Simulator;

/// <summary>What the simulator charges a small-width model (gpt2-large: h 1280, head dim 64, s 1024) by hand: the GEMM
/// shape curve against the GEMMs timed on an H200, attention dropout drawn inside the flash kernel, and fp16's unscale pass.</summary>
public class SmallWidthTests
{
    private static readonly ModelSpec Gpt2Large = ModelPresets.All["gpt2-large"];
    private static readonly GpuSpec H200 = GpuPresets.All["h200"];
    private static readonly RunDescription Micro32 = new(MicroBatch: 32, GlobalBatch: 32, Precision: Precision.Bf16,
        AttentionBackend: AttentionBackend.Flash);

    [Fact]
    public void TheShapeCurveGivesTheH1280GemmsTheirMeasuredTimeAtTheLargeShapesConstant()
    {
        // results/calibration/nvidia-h200: the reproduced models' GEMMs imply 0.736 under the curve (reproduced/calibrate.log);
        // gpt2-large's twelve (QKV, projection, fc1, fc2 x forward, data and weight gradient) took 0.482 + 0.481 + 0.462 +
        // 0.171 + 0.171 + 0.170 + 0.644 + 0.635 + 0.706 + 0.623 + 0.645 + 0.721 = 5.911 ms (gpt2-large-b32/calibrate.log).
        var gpu = H200 with { Efficiency = H200.Efficiency with { Gemm = 0.736 } };
        Span<GemmShape> shapes = stackalloc GemmShape[ComputeTime.LayerGemmCount];
        ComputeTime.LayerGemms(Gpt2Large, Micro32, shapes);
        double curve = 0;
        foreach (var g in shapes) curve += 3 * ComputeTime.Gemm(g.M, g.K, g.N, gpu, Precision.Bf16);
        // 32768 x 1280 x 3840 alone: 2·32768·1280·3840 FLOPs at 0.736 x (32768/32896)(1280/1408)(3840/3968) of 989 TFLOP/s.
        double qkv = 2.0 * 32768 * 1280 * 3840 / (989e12 * 0.736 * (32768.0 / 32896) * (1280.0 / 1408) * (3840.0 / 3968));
        Assert.Equal(qkv, ComputeTime.Gemm(32768, 1280, 3840, gpu, Precision.Bf16), qkv * 1e-12);
        Assert.InRange(curve / 5.911e-3, 1.0, 1.03);   // 2.4% slower than measured: the curve is not what makes h 1280 slow
    }

    [Fact]
    public void FlashAttentionDrawsEachCausalProbabilityForwardAndAgainInBackward()
    {
        var noAttentionDropout = Gpt2Large with { AttentionDropout = 0 };
        var with = ComputeTime.Layer(Gpt2Large, Micro32, H200);
        var without = ComputeTime.Layer(noAttentionDropout, Micro32, H200);
        // 32 sequences x 20 heads x 1024 x 1024 / 2 causal probabilities at 1.58e12 draws per second, once each way.
        double draws = 32.0 * 20 * 1024 * 1024 / 2 / 1.58e12;
        Assert.Equal(draws, with.AttentionForward - without.AttentionForward, draws * 1e-9);
        Assert.Equal(draws, with.AttentionBackward - without.AttentionBackward, draws * 1e-9);
        Assert.Equal(draws, with.Backward - without.Backward, draws * 1e-9);
        // Megatron's unfused attention writes its dropout mask to memory instead (charged as bytes, not draws).
        var unfused = Micro32 with { AttentionBackend = AttentionBackend.Unfused };
        Assert.Equal(ComputeTime.Layer(Gpt2Large, unfused, H200).AttentionForward,
            ComputeTime.Layer(noAttentionDropout, unfused, H200).AttentionForward);
    }

    [Fact]
    public void AttentionDropoutLengthensAOneGpuStepByItsDrawsInEveryLayer()
    {
        var cluster = ClusterSpec.Of(H200, 1);
        double slower = Estimator.Estimate(Gpt2Large, cluster, Micro32).StepTimeSeconds
                        - Estimator.Estimate(Gpt2Large with { AttentionDropout = 0 }, cluster, Micro32).StepTimeSeconds;
        // 36 layers x 2 x 32·20·1024²/2 = 2.416e10 draws: 15.3 ms, the part of the H200's measured 22.2 ms the hidden
        // dropout kernels do not stream (GpuPresets).
        Assert.Equal(36 * 2 * 32.0 * 20 * 1024 * 1024 / 2 / 1.58e12, slower, 1e-9);
    }

    [Fact]
    public void TheA100DrawsAtHoppersRatePerSmAndClock()
    {
        double a100 = GpuPresets.All["a100-80gb"].Efficiency.DropoutDrawsPerSecond!.Value;
        Assert.Equal(1.58e12 * 108 * 1410 / (132 * 1980), a100, 1e3);
        Assert.Null(GpuPresets.All["v100-32gb"].Efficiency.DropoutDrawsPerSecond);   // no flash kernel on Volta, nothing measured
    }

    [Fact]
    public void Fp16UnscalesAndChecksEveryMainGradientInOneMorePass()
    {
        var bf16 = new RunDescription(Precision: Precision.Bf16, GradientsInFp32: true);
        var fp16 = bf16 with { Precision = Precision.Fp16 };
        // fp32 main gradients: read 4 B and write 4 B each.
        Assert.Equal(8, OptimizerTime.BytesPerParameter(fp16) - OptimizerTime.BytesPerParameter(bf16));
        double hbm = 4800e9 * 0.80;
        Assert.Equal(1e9 * 8 / hbm, OptimizerTime.Step(1e9, fp16, H200) - OptimizerTime.Step(1e9, bf16, H200), 1e-12);
        // 16-bit gradients copied to fp32 main gradients first (2 + 4 B): the unscale still runs over the fp32 copy.
        var fp16Grads = fp16 with { GradientsInFp32 = false };
        Assert.Equal(8, OptimizerTime.BytesPerParameter(fp16Grads) - OptimizerTime.BytesPerParameter(fp16Grads with { Precision = Precision.Bf16 }));
    }
}
