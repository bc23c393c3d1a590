using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>Unfused gradient accumulation (Megatron-LM before --gradient-accumulation-fusion), by hand.</summary>
public class GradientAccumulationTests
{
    private static readonly GpuSpec A100 = GpuPresets.All["a100-80gb"];
    private static readonly double Hbm = 2039e9 * 0.80;

    [Fact]
    public void EachMicroBatchAfterTheFirstReadsTheFreshGradientAndReadsAndWritesTheAccumulatedOne()
    {
        // fp16 weights and fp16 accumulated gradients: 2 + 2·2 = 6 B per parameter, 3 of 4 micro-batches, averaged over 4.
        var fp16 = new RunDescription(GlobalBatch: 4, Precision: Precision.Fp16, GradientsInFp32: false, GradientAccumulationFusion: false);
        Assert.Equal(1e9 * 6 / Hbm * 3 / 4, ComputeTime.GradientAccumulation(1e9, fp16, A100), 12);
        // bf16 weights, fp32 main gradients: 2 + 2·4 = 10 B.
        var bf16 = fp16 with { Precision = Precision.Bf16, GradientsInFp32 = true };
        Assert.Equal(1e9 * 10 / Hbm * 3 / 4, ComputeTime.GradientAccumulation(1e9, bf16, A100), 12);
        // Fused into the GEMM, or a single micro-batch (its gradient is stored, not added): nothing extra.
        Assert.Equal(0, ComputeTime.GradientAccumulation(1e9, fp16 with { GradientAccumulationFusion = true }, A100));
        Assert.Equal(0, ComputeTime.GradientAccumulation(1e9, fp16 with { GlobalBatch = 1 }, A100));
    }

    [Fact]
    public void UnfusedAccumulationLengthensAPipelinedStepByOnePassOverTheWeightsPerMicroBatch()
    {
        var model = ModelPresets.All["gpt-18.4b"];
        var cluster = ClusterSpec.Of(A100, 64);
        var fused = new RunDescription(DataParallel: 2, TensorParallel: 8, PipelineParallel: 4, GlobalBatch: 64,
            Precision: Precision.Fp16, GradientsInFp32: false, AttentionBackend: AttentionBackend.Unfused);
        var unfused = fused with { GradientAccumulationFusion = false };
        double slower = Estimator.Estimate(model, cluster, unfused).StepTimeSeconds - Estimator.Estimate(model, cluster, fused).StepTimeSeconds;
        // Every rank adds its layers' gradients after 31 of its 32 backwards; the critical rank at least that much later.
        double perRank = model.NumLayers / 4 * ModelState.LayerParametersPerRank(model, 8) * 6 / Hbm * 31;
        Assert.InRange(slower, perRank, 1.2 * perRank);
    }
}
