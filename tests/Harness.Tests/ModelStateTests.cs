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
