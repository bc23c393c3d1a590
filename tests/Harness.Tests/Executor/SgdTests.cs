using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.Training;
using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// --optimizer sgd in the executor: its update is torch.optim.SGD's to the bit on values every step represents exactly; it
/// trains the tiny model on the shipped corpus; a checkpoint resumes it bit for bit with its momentum buffer, and an Adam
/// checkpoint is refused in one sentence.
/// </summary>
[Collection("training")]
public class SgdTests
{
    /// <summary>
    /// Two steps by hand, μ 0.5, weight decay 0.5 on the first two elements, lr 0.5, no clipping (every value a short binary
    /// fraction, so float32 holds each exactly). Step 1: d = g + 0.5·w on the decayed part = [1, 0, -1, 2]; the buffer starts as
    /// d; w = [1, -2, 0.5, 4] - 0.5·d = [0.5, -2, 1, 3]. Step 2: d = [1 + 0.25, -1 - 1, 0.5, 0] = [1.25, -2, 0.5, 0]; b = 0.5·b + d
    /// = [1.75, -2, 0, 1]; w = w - 0.5·b = [-0.375, -1, 1, 2.5]. Without momentum step 2 takes d itself: [-0.125, -1, 0.75, 3].
    /// </summary>
    [Theory]
    [InlineData(0.5, new float[] { -0.375f, -1, 1, 2.5f }, new float[] { 1.75f, -2, 0, 1 })]
    [InlineData(0.0, new float[] { -0.125f, -1, 0.75f, 3 }, new float[0])]
    public void TwoStepsAreTorchsSgdToTheBit(double momentum, float[] weights, float[] buffer)
    {
        TorchRuntime.Initialize();
        var rule = IUpdateRule.For(new RunDescription(Optimizer: OptimizerType.Sgd, SgdMomentum: momentum), new AdamSettings(WeightDecay: 0.5, ClipGrad: 0), fused: true);
        using var scope = NewDisposeScope();
        var w = tensor(new float[] { 1, -2, 0.5f, 4 });
        var states = rule.States.Select(_ => zeros(4)).ToList();
        var norm = tensor(1f);
        rule.ClipAndUpdate(w, tensor(new float[] { 0.5f, 1, -1, 2 }), states, null, decayedCount: 2, norm, lr: 0.5, step: 1);
        Assert.Equal(new float[] { 0.5f, -2, 1, 3 }, w.data<float>().ToArray());
        var g = tensor(new float[] { 1, -1, 0.5f, 0 });
        rule.ClipAndUpdate(w, g, states, null, decayedCount: 2, norm, lr: 0.5, step: 2);
        Assert.Equal(weights, w.data<float>().ToArray());
        Assert.Equal(buffer, states.SelectMany(s => s.data<float>().ToArray()));
        // L2 decay entered the update, not the gradient the step was given.
        Assert.Equal(new float[] { 1, -1, 0.5f, 0 }, g.data<float>().ToArray());
        Assert.False(rule.Fuses(w)); // no fused SGD kernel, on any device
    }

    private static readonly ModelSpec Small = DefaultRun.Model with { SeqLength = 32 };
    private static readonly RunDescription Sgd = new(MicroBatch: 4, GlobalBatch: 4, Precision: Precision.Fp32, Optimizer: OptimizerType.Sgd);

    private static RunSettings Settings(long iters, string? save = null, string? load = null) =>
        new(TrainIters: iters, Seed: 7, LearningRate: new LearningRateSettings(0.5, 0.05, LearningRateDecayStyle.Cosine, WarmupIters: 3, DecayIters: 30),
            DataPath: DataBlend.Single(DefaultRun.DataPath), Save: save, Load: load, LogInterval: 1);

    private static string NewFolder() => Path.Combine(TestTemp.Root, $"harness-sgd-{Guid.NewGuid():N}");

    private static IReadOnlyList<IterationRecord> Train(RunSettings settings, RunDescription? description = null) =>
        new TrainingRun(Small, description ?? Sgd, settings, NewFolder(), _ => { }).RunSingleDevice();

    [Fact]
    public void SgdTrainsTheTinyModel()
    {
        var records = Train(Settings(20));
        Assert.InRange(records[0].Loss, 10.6, 11.0);
        Assert.True(records.TakeLast(5).Average(r => r.Loss) < records[0].Loss - 1.0, string.Join(", ", records.Select(r => r.Loss)));
    }

    [Fact]
    public void ResumingContinuesWithTheMomentumBufferBitForBit()
    {
        string dir = NewFolder();
        var straight = Train(Settings(6));
        Train(Settings(3, save: dir));
        Assert.True(File.Exists(Path.Combine(dir, "iter_0000003", "mp_rank_00", "momentum_buffer.bin")));
        Assert.False(File.Exists(Path.Combine(dir, "iter_0000003", "mp_rank_00", "exp_avg.bin")));
        Assert.Equal(["momentum_buffer"], Checkpoint.Latest(dir).Meta.OptimizerStates!);
        var resumed = Train(Settings(6, load: dir));
        Assert.Equal(new long[] { 4, 5, 6 }, resumed.Select(r => r.Iteration));
        Assert.Equal(straight.Skip(3).Select(r => (r.Loss, r.GradNorm)), resumed.Select(r => (r.Loss, r.GradNorm)));
    }

    [Fact]
    public void AnAdamCheckpointResumedWithSgdIsOneSentence()
    {
        string dir = NewFolder();
        var adam = Sgd with { Optimizer = OptimizerType.Adam };
        Train(Settings(1, save: dir) with { LearningRate = new LearningRateSettings(3e-3) }, adam);
        var run = new TrainingRun(Small, Sgd, Settings(2, load: dir), NewFolder(), _ => { });
        var e = Assert.Throws<InvalidDataException>(run.Prepare);
        Assert.Equal($"The checkpoint in {Path.Combine(dir, "iter_0000001")} holds the optimizer states [exp_avg, exp_avg_sq] and this run's " +
                     "--optimizer sgd --sgd-momentum 0.9 keeps [momentum_buffer]; resume it with the --optimizer it was saved with.", e.Message);
    }
}
