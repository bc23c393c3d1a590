using Harness.Executor.Optimizer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>Megatron's loss scaler as a state machine (grad_scaler.py), which runs scale their loss (get_megatron_optimizer), and
/// the unscaling of the main gradients with its overflow flag.</summary>
public class LossScalingTests
{
    private static GradScaler Scaler(LossScaleSettings s) => GradScaler.For(new RunDescription(Precision: Precision.Fp16), s)!;

    /// <summary>
    /// Initial 1024, floor 64, window 3, hysteresis 2, overflows (O) and clean iterations (C), derived by hand from
    /// DynamicGradScaler.update: the first O only spends hysteresis; the second halves; a clean iteration does not restore
    /// the hysteresis count, so the O after O C halves at once; three C in a row double and restore it; at the floor the
    /// scale stays.
    /// </summary>
    [Fact]
    public void TheDynamicScaleFollowsMegatronsUpdateRule()
    {
        var scaler = Scaler(new LossScaleSettings(Initial: 1024, Min: 64, Window: 3, Hysteresis: 2));
        const string sequence = "OOCOCCCOCCCOOOOOO";
        double[] expected = [1024, 512, 512, 256, 256, 256, 512, 512, 512, 512, 1024, 1024, 512, 256, 128, 64, 64];
        var scales = new List<double>();
        foreach (char c in sequence)
        {
            scaler = scaler.Update(c == 'O');
            scales.Add(scaler.Scale);
        }
        Assert.Equal(expected, scales);
        // Six overflows since the last growth restored the count to 2: 2 - 6; the growth count restarts at every overflow.
        Assert.Equal((0, -4), (scaler.GrowthTracker, scaler.HysteresisTracker));
        // With hysteresis 1 the first overflow halves; a thousand clean iterations (the default window) double.
        var one = Scaler(new LossScaleSettings(Initial: 65536, Hysteresis: 1)).Update(true);
        Assert.Equal(32768, one.Scale);
        for (int i = 0; i < 999; i++) one = one.Update(false);
        Assert.Equal(32768, one.Scale);
        Assert.Equal(65536, one.Update(false).Scale);
    }

    [Fact]
    public void AConstantScaleNeverChangesAndIsRestoredFromNoCheckpoint()
    {
        var constant = Scaler(new LossScaleSettings(Constant: 4096));
        Assert.False(constant.Dynamic);
        var after = "OOOOCCCO".Aggregate(constant, (s, c) => s.Update(c == 'O'));
        Assert.Equal(constant, after);
        Assert.Equal(constant, constant.Restore(Scaler(new LossScaleSettings()) with { Scale = 2 }));
        // A dynamic scaler takes a checkpoint's scale and trackers and keeps its own settings.
        var dynamic = Scaler(new LossScaleSettings(Window: 5));
        var saved = new GradScaler(new LossScaleSettings(Window: 9), 512, 3, 1);
        Assert.Equal(dynamic with { Scale = 512, GrowthTracker = 3, HysteresisTracker = 1 }, dynamic.Restore(saved));
    }

    [Fact]
    public void MegatronsRuleDecidesWhichRunsScaleTheirLoss()
    {
        var constant = new LossScaleSettings(Constant: 128);
        var dynamic = new LossScaleSettings();
        RunDescription Of(Precision p, bool distributed = false) => new(DataParallel: 2, ZeroStage: distributed ? 1 : 0, Precision: p);
        // fp16: dynamic from 2^32, or constant with --loss-scale.
        Assert.Equal(new GradScaler(dynamic, 4294967296, 0, 2), GradScaler.For(Of(Precision.Fp16), dynamic));
        Assert.Equal(128, GradScaler.For(Of(Precision.Fp16), constant)!.Scale);
        // bf16: only a constant scale; fp32: only with the distributed optimizer (Megatron's FP32Optimizer scales by 1).
        Assert.Null(GradScaler.For(Of(Precision.Bf16), dynamic));
        Assert.Equal(128, GradScaler.For(Of(Precision.Bf16), constant)!.Scale);
        Assert.Null(GradScaler.For(Of(Precision.Fp32), dynamic));
        Assert.Null(GradScaler.For(Of(Precision.Fp32), constant));
        Assert.Equal(128, GradScaler.For(Of(Precision.Fp32, distributed: true), constant)!.Scale);
        // The scale is a float32 value, and 1/scale is formed in double then rounded to float32.
        var odd = GradScaler.For(Of(Precision.Fp16), new LossScaleSettings(Initial: 0.1))!;
        Assert.Equal((double)0.1f, odd.Scale);
        Assert.Equal((double)(float)(1 / (double)0.1f), odd.InverseScale);
        Assert.Equal(Math.Pow(2, -32), GradScaler.For(Of(Precision.Fp16), dynamic)!.InverseScale);
    }

    [Fact]
    public void UnscalingMultipliesByTheInverseScaleAndFlagsAnyInfOrNaN()
    {
        Harness.Executor.Native.TorchRuntime.Initialize();
        var a = tensor(new[] { 2f, -4f, 8f });
        var b = tensor(new[] { 0.5f });
        using (var flag = MainGradUnscale.UnscaleAndFindInf([a, b], 0.25, CPU))
            Assert.Equal(0f, flag.item<float>());
        Assert.Equal(new[] { 0.5f, -1f, 2f }, a.data<float>().ToArray());
        Assert.Equal(new[] { 0.125f }, b.data<float>().ToArray());
        foreach (float bad in new[] { float.PositiveInfinity, float.NegativeInfinity, float.NaN })
        {
            var c = tensor(new[] { 1f, bad, 3f });
            using var flag = MainGradUnscale.UnscaleAndFindInf([tensor(new[] { 1f }), c], 0.5, CPU);
            Assert.Equal(1f, flag.item<float>());
        }
    }
}
