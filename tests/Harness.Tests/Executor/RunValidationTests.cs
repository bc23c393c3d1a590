using Harness.Cli.Commands;
using Harness.Executor.Native;
using Harness.Executor.Training.Records;
using Harness.Executor.Training;
using Harness.Executor.Validation;
using Harness.Simulator;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>harness validate: a run's summary against the simulator's estimate of exactly its configuration.</summary>
[Collection("Console")]
public class RunValidationTests
{
    /// <summary>A summary.json as harness run writes it, for a run that stepped in <paramref name="stepMs"/>.</summary>
    private static string WriteRun(TrainingOptions options, double stepMs)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"harness-validate-{Guid.NewGuid():N}", "run-a");
        Directory.CreateDirectory(dir);
        var records = Enumerable.Range(1, 5).Select(i => new IterationRecord(i, stepMs, 1, 400, 0.4, 10, 1, 1e-4, 60L << 30, 60L << 30, 0.2, stepMs)).ToList();
        RunSummary.From(options, "NVIDIA H200", "test", 1, records).Write(Path.Combine(dir, "summary.json"));
        return dir;
    }

    private static readonly TrainingOptions Caat = new(ModelPresets.All["caat-1b"], ExecutionDevice.Cuda, Bf16: true, MicroBatchSize: 8,
        GlobalBatchSize: 64, MockData: true, Gpu: GpuPresets.All["h200"], Recompute: RecomputeGranularity.Selective);

    [Fact]
    public void TheEstimateIsTheSimulatorsForTheSameConfiguration()
    {
        var v = RunValidation.Of(WriteRun(Caat, 2000));
        var expected = Estimator.Estimate(ModelPresets.All["caat-1b"], new ClusterSpec(GpuPresets.All["h200"], 1, 1),
            new RunDescription(MicroBatch: 8, GlobalBatch: 64, Recompute: RecomputeSpec.Selective, GradientAccumulationFusion: true));
        Assert.Equal(expected.StepTimeSeconds, v.Estimate.StepTimeSeconds, 12);
        Assert.Equal(2.0, v.MeasuredStepSeconds, 12);
        Assert.Equal("h200", v.Gpu);
        // Throughput error as reproduce counts it: the simulator's tokens/s over the run's, minus one.
        Assert.Equal(2.0 / expected.StepTimeSeconds - 1, v.Error, 12);
        Assert.False(v.LaunchBound);
    }

    [Fact]
    public void AnotherPresetCanBeNamedAndRunsBeforeTheFusionFoldedTheirGradients()
    {
        var folder = WriteRun(Caat with { GradientAccumulationFusion = false }, 2000);
        var v = RunValidation.Of(folder, GpuPresets.All["h100-sxm"]);
        Assert.Equal("h100-sxm", v.Gpu);
        Assert.False(v.Config.GradientAccumulationFusion);
    }

    [Fact]
    public void ARunIsSimulatedWithTheDropoutItApplied()
    {
        // gpt2-large's spec has dropout; a run with --hidden-dropout 0 --attention-dropout 0 (or recorded before the executor
        // had dropout, without those fields) trained without it, and the simulator's element-wise work follows the run.
        var gpt = Caat with { Model = ModelPresets.All["gpt2-large"], MicroBatchSize = 32, GlobalBatchSize = 32, Recompute = RecomputeGranularity.None };
        var with = RunValidation.Of(WriteRun(gpt with { HiddenDropout = 0.1, AttentionDropout = 0.1 }, 400));
        var without = RunValidation.Of(WriteRun(gpt, 400));
        Assert.True(with.Model.Dropout);
        Assert.False(without.Model.Dropout);
        Assert.True(with.Estimate.StepTimeSeconds > without.Estimate.StepTimeSeconds);
    }

    [Fact]
    public void CpuRunsAndFoldersWithoutASummaryAreOneSentence()
    {
        var cpu = WriteRun(Caat with { Device = ExecutionDevice.Cpu, Bf16 = false, Gpu = null }, 2000);
        Assert.Contains("ran on CPU", Assert.Throws<RunValidationException>(() => RunValidation.Of(cpu)).Message);
        var empty = Directory.CreateTempSubdirectory().FullName;
        Assert.Contains("holds no summary.json", Assert.Throws<RunValidationException>(() => RunValidation.Of(empty)).Message);
    }

    [Fact]
    public void TheCommandComparesEveryRunUnderAFolderAndRejectsBadInput()
    {
        var run = WriteRun(Caat, 2000);
        string parent = Path.GetDirectoryName(run)!, csv = Path.Combine(parent, "v.csv");
        var (code, output, _) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--csv", csv);
        Assert.Equal(0, code);
        Assert.Contains("run-a", output);
        Assert.Equal(2, File.ReadAllLines(csv).Length);
        Assert.Equal(2, ConsoleCapture.Run(ValidateCommand.Run).Code);
        var (badGpu, _, error) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--gpu", "tpu");
        Assert.Equal(2, badGpu);
        Assert.Contains("--gpu 'tpu' is not a preset", error);
        Assert.Equal(2, ConsoleCapture.Run(ValidateCommand.Run, Path.Combine(parent, "nowhere")).Code);
    }
}
