using Harness.Executor.Optimizer;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>
/// Megatron's OptimizerParamScheduler.get_lr by hand: lr 1e-3, min-lr 1e-4, 2 warm-up iterations and 10 decay iterations
/// at global batch 4, so steps (samples) are 4 per iteration, the warm-up ends at 8 and the decay at 40.
/// </summary>
public class LearningRateScheduleTests
{
    private static LearningRateSchedule Schedule(LearningRateDecayStyle style, long warmup = 2, double? fraction = null, long? decay = 10) =>
        new(new LearningRateSettings(1e-3, 1e-4, style, warmup, fraction, decay), trainIters: 20, globalBatch: 4);

    [Theory]
    [InlineData(LearningRateDecayStyle.Constant)]
    [InlineData(LearningRateDecayStyle.Linear)]
    [InlineData(LearningRateDecayStyle.Cosine)]
    [InlineData(LearningRateDecayStyle.InverseSquareRoot)]
    public void WarmUpIsLinearFromZeroInEveryStyle(LearningRateDecayStyle style)
    {
        var s = Schedule(style);
        Assert.Equal(0, s.At(0));            // step 0 of 8
        Assert.Equal(5e-4, s.At(1), 15);     // 4/8
        Assert.Equal(1e-3, s.At(2), 15);     // 8/8: the warm-up's last step is at the peak
    }

    [Fact]
    public void ConstantStaysAtTheRateAfterWarmUpAndPastTheDecay()
    {
        var s = Schedule(LearningRateDecayStyle.Constant);
        Assert.Equal(1e-3, s.At(3));
        Assert.Equal(1e-3, s.At(100));
    }

    [Fact]
    public void LinearFallsToMinLrOverTheDecayThenStays()
    {
        var s = Schedule(LearningRateDecayStyle.Linear);
        Assert.Equal(1e-4 + 0.75 * 9e-4, s.At(4), 15);   // r = (16 - 8) / (40 - 8) = 1/4
        Assert.Equal(5.5e-4, s.At(6), 15);               // r = 1/2
        Assert.Equal(1e-4, s.At(10), 15);                // r = 1
        Assert.Equal(1e-4, s.At(11));                    // past the decay
    }

    [Fact]
    public void CosineFollowsHalfACosineToMinLr()
    {
        var s = Schedule(LearningRateDecayStyle.Cosine);
        Assert.Equal(1e-4 + 9e-4 * 0.5 * (1 + Math.Sqrt(0.5)), s.At(4), 15); // r = 1/4: cos(π/4) = √½
        Assert.Equal(5.5e-4, s.At(6), 15);                                   // r = 1/2: cos(π/2) = 0
        Assert.Equal(1e-4, s.At(10), 15);
        Assert.Equal(1e-4, s.At(11));
    }

    [Fact]
    public void InverseSquareRootDecaysWithTheStepsInSamples()
    {
        var s = Schedule(LearningRateDecayStyle.InverseSquareRoot);
        Assert.Equal(1e-3 * Math.Sqrt(8.0 / 12), s.At(3), 15);   // √(warm-up steps / steps)
        Assert.Equal(5e-4, s.At(8), 15);                         // √(8 / 32)
        Assert.Equal(1e-4, s.At(11));                            // past the decay: min-lr
        // Without warm-up Megatron keeps a warm-up of one sample: at iteration 4 (16 samples) the rate is lr/4, and the
        // first iteration (step 0, taken as 1) runs at lr.
        var none = Schedule(LearningRateDecayStyle.InverseSquareRoot, warmup: 0);
        Assert.Equal(1e-3, none.At(0));
        Assert.Equal(2.5e-4, none.At(4), 15);
        Assert.Equal(1e-3 / 6, none.At(9), 15);                 // √(1 / 36)
        // And never below min-lr.
        var floor = new LearningRateSchedule(new LearningRateSettings(1e-3, 2e-4, LearningRateDecayStyle.InverseSquareRoot), trainIters: 20, globalBatch: 4);
        Assert.Equal(2e-4, floor.At(9));
    }

    [Fact]
    public void AWarmUpFractionIsOfTheDecayAndTheDecayDefaultsToTheTrainingLength()
    {
        // 0.25 of 10 decay iterations: 10 samples, 2.5 iterations.
        var s = Schedule(LearningRateDecayStyle.Linear, fraction: 0.25);
        Assert.Equal(4e-4, s.At(1), 15);
        Assert.Equal(8e-4, s.At(2), 15);
        Assert.Equal(1e-4 + 9e-4 * (1 - 2.0 / 30), s.At(3), 15);  // r = (12 - 10) / (40 - 10)
        // --lr-decay-iters unset: the decay ends with --train-iters (20).
        var toTheEnd = Schedule(LearningRateDecayStyle.Linear, decay: null);
        Assert.Equal(1e-4 + 9e-4 * (1 - 32.0 / 72), toTheEnd.At(10), 15); // r = (40 - 8) / (80 - 8)
        Assert.Equal(1e-4, toTheEnd.At(20), 15);
    }

    [Fact]
    public void SettingsMegatronRefusesAreSentences()
    {
        static IReadOnlyList<string> Check(LearningRateSettings s) => new RunSettings(TrainIters: 10, LearningRate: s, MockData: true).Validate();
        Assert.Equal(["--min-lr 0.001 must be in [0, --lr 0.0001]."], Check(new LearningRateSettings(1e-4, 1e-3)));
        Assert.Equal(["--lr-warmup-fraction 1.5 is outside [0, 1]."], Check(new LearningRateSettings(WarmupFraction: 1.5)));
        Assert.Empty(Check(new LearningRateSettings(WarmupIters: 3)));
    }
}
