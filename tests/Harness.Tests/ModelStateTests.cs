using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

public class ModelStateTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(64)]
    public void DistributedOptimizerCostsSixPlusTwelveOverDBytesPerParameter(int d)
    {
        var c = new RunDescription(DataParallel: d, ZeroStage: 1, Precision: Precision.Bf16);
        Assert.Equal(6 + 12.0 / d, ModelState.BytesPerParameter(c), 12);
    }

    [Fact]
    public void ContextParallelRanksShareTheOptimizerShards()
    {
        var c = new RunDescription(DataParallel: 4, ContextParallel: 2, ZeroStage: 1, Precision: Precision.Bf16);
        Assert.Equal(6 + 12.0 / 8, ModelState.BytesPerParameter(c), 12);
    }

    [Fact]
    public void ReplicatedMixedPrecisionAdamCostsEighteenBytes() =>
        Assert.Equal(18, ModelState.BytesPerParameter(new RunDescription(DataParallel: 8, Precision: Precision.Bf16)), 12);

    /// <summary>
    /// Megatron's --grad-reduce-in-bf16 keeps 2 B gradients: 4 + 12/d. Its precision-aware optimizer with bf16 weights keeps
    /// the fp32 master as a 2 B remainder (store_param_remainders): 4 + 10/d with fp32 moments, 4 + 6/d with bf16 ones, and
    /// 4 + 4/d with fp8 moments; with fp16 master weights, 4 + 10/d again.
    /// </summary>
    [Theory]
    [InlineData(false, StateDtype.Fp32, StateDtype.Fp32, StateDtype.Fp32, 12)]
    [InlineData(true, StateDtype.Fp32, StateDtype.Fp32, StateDtype.Fp32, 10)]
    [InlineData(true, StateDtype.Fp32, StateDtype.Bf16, StateDtype.Bf16, 6)]
    [InlineData(true, StateDtype.Fp32, StateDtype.Fp8, StateDtype.Fp8, 4)]
    [InlineData(true, StateDtype.Fp16, StateDtype.Fp32, StateDtype.Fp32, 10)]
    public void Bf16GradientsAndThePrecisionAwareOptimizerShrinkTheState(bool aware, StateDtype main, StateDtype m, StateDtype v, double optimizer)
    {
        const int d = 8;
        var c = new RunDescription(DataParallel: d, GlobalBatch: d, ZeroStage: 1, Precision: Precision.Bf16, GradientsInFp32: false, Adam: new AdamStates(aware, main, m, v));
        Assert.Empty(c.Validate(ModelPresets.All["llama-7b"], d));
        Assert.Equal(4 + optimizer / d, ModelState.BytesPerParameter(c), 12);
    }

    /// <summary>The Adam step's traffic per parameter: read and write the states, read the gradient twice (update and the
    /// clip's norm), write the weight: 2·12 + 2·4 + 2 = 34 B in bf16 with fp32 states; 2·8 + 2·4 + 2·4 (weights are the master)
    /// = 32 B in fp32; fp16 gradients copied to fp32 first, then unscaled and checked in one more pass over that fp32 copy (Megatron's loss scaler):
    /// 2·12 + (2 + 4 + 2·4) + 2 + 2·4 = 48 B; with bf16 gradients read as they are
    /// and 16-bit remainders 2·10 + 2·2 + 2·2 (the bf16 weight read and written) = 28 B.</summary>
    [Fact]
    public void TheAdamStepMovesItsStatesGradientsAndWeights()
    {
        Assert.Equal(34, OptimizerTime.BytesPerParameter(new RunDescription(Precision: Precision.Bf16)));
        Assert.Equal(32, OptimizerTime.BytesPerParameter(new RunDescription(Precision: Precision.Fp32)));
        Assert.Equal(48, OptimizerTime.BytesPerParameter(new RunDescription(Precision: Precision.Fp16, GradientsInFp32: false)));
        Assert.Equal(28, OptimizerTime.BytesPerParameter(new RunDescription(Precision: Precision.Bf16, GradientsInFp32: false, Adam: new AdamStates(PrecisionAware: true))));
    }

    /// <summary>The step's time also writes every gradient the rank holds once, zeroing the buffer for the next iteration
    /// (Megatron's zero_grad_buffer): 1e9 parameters in bf16 with fp32 gradients move 34 + 4 B each; with the distributed
    /// optimizer over d 8 the step's 34 B are an eighth's, the zeroed 4 B the whole buffer's; under ZeRO 2 both an eighth's.</summary>
    [Fact]
    public void TheStepAlsoZeroesTheGradientsTheRankHolds()
    {
        var h100 = GpuPresets.All["h100-sxm"];
        double rate = h100.HbmBandwidthBytesPerSecond * h100.Efficiency.Hbm;
        var bf16 = new RunDescription(Precision: Precision.Bf16);
        Assert.Equal(1e9 * (34 + 4) / rate, OptimizerTime.Step(1e9, bf16, h100), 12);
        var d8 = bf16 with { DataParallel = 8, GlobalBatch = 8, ZeroStage = 1 };
        Assert.Equal((1e9 / 8 * 34 + 1e9 * 4) / rate, OptimizerTime.Step(1e9, d8, h100), 12);
        Assert.Equal(1e9 / 8 * (34 + 4) / rate, OptimizerTime.Step(1e9, d8 with { ZeroStage = 2 }, h100), 12);
    }

    /// <summary>
    /// SGD's states by hand: fp32 master weights (4 B, none in fp32 training) and the momentum buffer (4 B, none with momentum
    /// 0). bf16: 2 B weights + 4 B gradients + 8 B = 14 B; with the distributed optimizer over d 8, 6 + 8/8 = 7 B; without
    /// momentum 2 + 4 + 4 = 10 B. fp32: 4 + 4 + 4 = 12 B, without momentum 8 B. The step moves its states both ways, the
    /// gradient twice and writes the weight: bf16 2·8 + 2·4 + 2 = 26 B; fp32 (the weight is the master, among the states)
    /// 2·(4 + 4) + 2·4 = 24 B.
    /// </summary>
    [Fact]
    public void SgdKeepsMasterWeightsAndOneMomentumBuffer()
    {
        var sgd = new RunDescription(Precision: Precision.Bf16, Optimizer: OptimizerType.Sgd);
        Assert.Equal(14, ModelState.BytesPerParameter(sgd), 12);
        Assert.Equal(7, ModelState.BytesPerParameter(sgd with { DataParallel = 8, GlobalBatch = 8, ZeroStage = 1 }), 12);
        Assert.Equal(10, ModelState.BytesPerParameter(sgd with { SgdMomentum = 0 }), 12);
        Assert.Equal(12, ModelState.BytesPerParameter(sgd with { Precision = Precision.Fp32 }), 12);
        Assert.Equal(8, ModelState.BytesPerParameter(sgd with { Precision = Precision.Fp32, SgdMomentum = 0 }), 12);
        Assert.Equal(26, OptimizerTime.BytesPerParameter(sgd));
        Assert.Equal(24, OptimizerTime.BytesPerParameter(sgd with { Precision = Precision.Fp32 }));
    }

    [Fact]
    public void MoreTensorParallelismMeansFewerWeightBytesPerGpu()
    {
        var m = ModelPresets.All["llama-65b"];
        double previous = double.MaxValue;
        foreach (int t in new[] { 1, 2, 4, 8 })
        {
            double weights = ModelState.Bytes(ModelState.RankParameters(m, new RunDescription(TensorParallel: t, Precision: Precision.Bf16), 0), new RunDescription(Precision: Precision.Bf16)).Weights;
            Assert.True(weights < previous, $"t {t}: {weights} not below {previous}");
            previous = weights;
        }
    }

    [Fact]
    public void PipelineRanksTogetherHoldTheWholeModel()
    {
        // Untied Llama: every parameter lives on exactly one pipeline rank (t = 1).
        var m = ModelPresets.All["llama-7b"];
        var c = new RunDescription(PipelineParallel: 4, Precision: Precision.Bf16);
        double sum = Enumerable.Range(0, 4).Sum(r => ModelState.RankParameters(m, c, r));
        Assert.Equal(m.TotalParameters, sum, 1e-6);
    }
}
