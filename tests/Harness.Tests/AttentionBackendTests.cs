using Harness.Megatron;
using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>--attention-backend in the simulator: each kernel's time and memory derived by hand for one small layer, auto
/// resolved as Transformer Engine resolves it, and the backends a GPU does not have refused.</summary>
public class AttentionBackendTests
{
    // One layer: s 1024, h 512, 8 heads of 64, b 1, t 1, bf16, no dropout; on an H100 SXM (989 TFLOP/s, 3350 GB/s; GEMM
    // 0.70, flash 0.29, cuDNN 0.47, HBM 0.80, GEMM half-dimension 128).
    private static readonly ModelSpec Layer = ModelPresets.All["llama-7b"] with
    {
        NumLayers = 1, HiddenSize = 512, NumAttentionHeads = 8, NumQueryGroups = 8, FfnHiddenSize = 1024, SeqLength = 1024,
    };
    private static readonly GpuSpec H100 = GpuPresets.All["h100-sxm"];
    private static readonly RunDescription Bf16 = new(Precision: Precision.Bf16);

    private static double Forward(AttentionBackend backend, GpuSpec? gpu = null) =>
        ComputeTime.Layer(Layer, Bf16 with { AttentionBackend = backend }, gpu ?? H100).AttentionForward;

    private static void Exact(double expected, double actual) => Assert.Equal(expected, actual, expected * 1e-12);

    [Fact]
    public void FlashAndCuDnnChargeTheCausalHalfAtTheirOwnEfficiency()
    {
        // Score and context matmuls over the unmasked half: 2·s·s·h = 2·1024·1024·512 FLOPs.
        double causal = 2.0 * 1024 * 1024 * 512;
        Exact(causal / (989e12 * 0.29), Forward(AttentionBackend.Flash));
        // cuDNN's 0.47 is its rate at 8192 keys; at 1024 it reaches (1024/2024)/(8192/9192) of it (Hopper's k½ 1000).
        Exact(causal / (989e12 * 0.47 * (1024.0 / 2024) / (8192.0 / 9192)), Forward(AttentionBackend.Fused));
    }

    [Fact]
    public void UnfusedRunsTwoBatchedGemmsOverTheWholeSquareAndASoftmaxThroughMemory()
    {
        // Per head: Q·Kᵀ and P·V, each a (1024 x 64)·(64 x 1024)-shaped GEMM of 2·1024·64·1024 FLOPs at 0.70 of peak times
        // the shape factor (1024/1152)·(64/192)·(1024/1152); the fused scale-mask-softmax reads and writes the 8·1024² bf16
        // scores once (4 bytes each).
        double shape = 1024.0 / 1152 * (64.0 / 192) * (1024.0 / 1152);
        double gemm = 2.0 * 1024 * 64 * 1024 / (989e12 * 0.70 * shape);
        double softmax = 8.0 * 1024 * 1024 * 4 / (3350e9 * 0.80);
        Exact(2 * 8 * gemm + softmax, Forward(AttentionBackend.Unfused));
        Assert.Equal(Forward(AttentionBackend.Unfused), Forward(AttentionBackend.Local));
    }

    [Fact]
    public void UnfusedKeepsTheScoresFlashAndCuDnnTheirSoftmaxStatistics()
    {
        double Kept(AttentionBackend backend)
        {
            var c = Bf16 with { AttentionBackend = backend };
            return Activations.PerLayerKept(Activations.Layer(Layer, c), c.RecomputeOrNone, 1);
        }
        // Per token: the unfused softmax output, 2 bytes per head and key (2·8·1024), in place of 4 bytes of fp32
        // log-sum-exp per head (4·8); 1024 tokens.
        Exact(1024 * (2.0 * 8 * 1024 - 4 * 8), Kept(AttentionBackend.Unfused) - Kept(AttentionBackend.Flash));
        Assert.Equal(Kept(AttentionBackend.Flash), Kept(AttentionBackend.Fused));
        Assert.Equal(Kept(AttentionBackend.Unfused), Kept(AttentionBackend.Local));
    }

    [Theory]
    [InlineData("h100-sxm", Precision.Bf16, AttentionBackend.Fused)]   // Hopper: FusedAttention preferred
    [InlineData("h200", Precision.Fp16, AttentionBackend.Fused)]
    [InlineData("a100-80gb", Precision.Bf16, AttentionBackend.Flash)]  // Ampere: FlashAttention-2
    [InlineData("h100-sxm", Precision.Fp32, AttentionBackend.Unfused)] // neither takes fp32 inputs
    [InlineData("v100-32gb", Precision.Fp16, AttentionBackend.Unfused)] // neither runs below sm80
    [InlineData("gaudi2", Precision.Bf16, AttentionBackend.Flash)]     // no Transformer Engine: its own fused kernel
    public void AutoIsTransformerEnginesChoice(string gpu, Precision precision, AttentionBackend expected)
    {
        var auto = new RunDescription(Precision: precision, AttentionBackend: AttentionBackend.Auto);
        Assert.Equal(expected, AttentionKernels.Resolve(auto, GpuPresets.All[gpu]));
        // The step costs what the resolved backend costs.
        var cluster = ClusterSpec.Of(GpuPresets.All[gpu], 1);
        Assert.Equal(Estimator.Estimate(Layer, cluster, auto with { AttentionBackend = expected }).StepTimeSeconds,
            Estimator.Estimate(Layer, cluster, auto).StepTimeSeconds);
    }

    [Fact]
    public void ABackendTheGpuDoesNotHaveIsOneSentence()
    {
        var v100 = ClusterSpec.Of(GpuPresets.All["v100-32gb"], 1);
        var fused = new RunDescription(Precision: Precision.Fp16, AttentionBackend: AttentionBackend.Fused);
        Assert.Equal("--attention-backend fused: the v100-32gb has no cuDNN fused attention (it needs an NVIDIA GPU of compute capability 8.0 or newer); use flash, unfused, local or auto.",
            Assert.Single(Estimator.Validate(Layer, v100, fused)));
        Assert.StartsWith("--attention-backend flash: the v100-32gb (compute capability 7.0) cannot run FlashAttention-2",
            Assert.Single(Estimator.Validate(Layer, v100, fused with { AttentionBackend = AttentionBackend.Flash })));
        Assert.Empty(Estimator.Validate(Layer, v100, fused with { AttentionBackend = AttentionBackend.Unfused }));
        Assert.Single(Estimator.Validate(Layer, ClusterSpec.Of(GpuPresets.All["gaudi2"], 1), fused));
        Assert.Empty(Estimator.Validate(Layer, ClusterSpec.Of(GpuPresets.All["a100-80gb"], 1), fused));
    }

    [Theory]
    [InlineData("--use-flash-attn", AttentionBackend.Flash)]
    [InlineData("--attention-backend fused --use-flash-attn", AttentionBackend.Fused)] // Megatron-core no longer reads the old flag
    [InlineData("--attention-backend local", AttentionBackend.Local)]
    [InlineData("", AttentionBackend.Flash)]
    public void TheCodecReadsTheBackend(string flags, AttentionBackend expected)
    {
        var cl = CommandLine.Parse(flags.Split(' ', StringSplitOptions.RemoveEmptyEntries), RunDescriptionFlags.Flags);
        var d = RunDescriptionFlags.Read(cl, 1);
        Assert.Empty(cl.Errors);
        Assert.Equal(expected, d.AttentionBackend);
        var back = CommandLine.Parse(RunDescriptionFlags.Format(d).ToArray(), RunDescriptionFlags.Flags);
        Assert.Equal(d, RunDescriptionFlags.Read(back, 1));
    }

    [Fact]
    public void AnUnknownBackendNamesTheValidOnes()
    {
        var cl = CommandLine.Parse(["--attention-backend", "cudnn"], RunDescriptionFlags.Flags);
        RunDescriptionFlags.Read(cl, 1);
        Assert.Equal("--attention-backend 'cudnn' is not one of: flash, fused, unfused, local, auto.", Assert.Single(cl.Errors));
    }
}
