using Harness.Cli.Commands;
using Harness.Executor.Training.Records;
using Harness.Executor.Training;
using Harness.Reproduce;
using Harness.Simulator;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>harness validate: a run's summary against the simulator's estimate of exactly its run description.</summary>
[Collection("Console")]
public class RunValidationTests
{
    /// <summary>A summary.json as harness run writes it, for a run of (model, description as run, settings) that stepped in <paramref name="stepMs"/>.</summary>
    private static string WriteRun(ModelSpec model, RunDescription description, RunSettings settings, double stepMs, long? allocatedPeak = null,
        IReadOnlyList<OffloadTotals>? offloadPerRank = null)
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-validate-{Guid.NewGuid():N}", "run-a");
        Directory.CreateDirectory(dir);
        var records = Enumerable.Range(1, 5).Select(i => new IterationRecord(i, stepMs, 1, 400, 0.4, 10, 1, 1e-4, 60L << 30, 60L << 30, 0.2, stepMs,
            AllocatedPeakBytes: allocatedPeak is long a ? a - 5 + i : null)).ToList();
        RunSummary.From(new RunRecord(model, description, settings, [], "NVIDIA H200", "test", 1, model.VocabSize, []), records, offloadPerRank: offloadPerRank)
            .Write(Path.Combine(dir, "summary.json"));
        return dir;
    }

    private static readonly ModelSpec Caat = ModelPresets.All["caat-1b"];
    // As a run records it: this executor's kernels (--transformer-impl harness).
    private static readonly RunDescription CaatRun = new(MicroBatch: 8, GlobalBatch: 64, Recompute: RecomputeSpec.Selective, Implementation: TransformerImpl.Harness);
    private static readonly RunSettings OnH200 = new(MockData: true, Device: ExecutionDevice.Cuda, Gpu: "h200", Split: new DataSplit(969, 30, 1), EvalInterval: 50);

    [Fact]
    public void TheEstimateIsTheSimulatorsForTheSameDescription()
    {
        var v = RunValidation.Of(WriteRun(Caat, CaatRun, OnH200, 2000));
        var expected = Estimator.Estimate(Caat, new ClusterSpec(GpuPresets.All["h200"], 1, 1), CaatRun);
        Assert.Equal(expected.StepTimeSeconds, v.Estimate.StepTimeSeconds, 12);
        Assert.Equal(CaatRun, v.Config);
        Assert.Equal(2.0, v.MeasuredStepSeconds, 12);
        Assert.Equal("h200", v.Gpu);
        // Throughput error as reproduce counts it: the simulator's tokens/s over the run's, minus one.
        Assert.Equal(2.0 / expected.StepTimeSeconds - 1, v.Error, 12);
        Assert.False(v.LaunchBound);
    }

    [Fact]
    public void MemorySetsTheAllocatorsPeakBesideTheSimulatedAllocatedPeak()
    {
        // The summary keeps the largest of the iterations' cumulative peaks; the error is simulated over measured, minus one.
        var v = RunValidation.Of(WriteRun(Caat, CaatRun, OnH200, 2000, allocatedPeak: 40L << 30));
        Assert.Equal(40L << 30, v.MeasuredAllocatedPeakBytes);
        Assert.Equal(60L << 30, v.MeasuredMemoryBytes);
        Assert.Equal((double)v.Estimate.PeakMemoryBytes / (40L << 30) - 1, v.MemoryError!.Value, 12);
        var nvmlOnly = RunValidation.Of(WriteRun(Caat, CaatRun, OnH200, 2000));
        Assert.Null(nvmlOnly.MeasuredAllocatedPeakBytes);
        Assert.Null(nvmlOnly.MemoryError);
    }

    [Fact]
    public void AParallelRunIsEstimatedAsItRanOnItsWorld()
    {
        // Every field of the description as run reaches the simulator: layout, interleaving, recomputation by block, the
        // distributed optimizer, and the overlaps the executor recorded as not run (pipeline p2p).
        var model = ModelPresets.All["gpt2-large"] with { HiddenDropout = 0, AttentionDropout = 0 };
        var asRun = new RunDescription(DataParallel: 2, TensorParallel: 2, PipelineParallel: 2, LayersPerVirtualStage: 9, MicroBatch: 2, GlobalBatch: 16,
            Recompute: new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 2), ZeroStage: 1,
            Overlap: new OverlapSpec(PipelineP2p: false, TensorParallelBackwardAsync: false, DeviceMaxConnections: 8), Implementation: TransformerImpl.Harness);
        var v = RunValidation.Of(WriteRun(model, asRun, OnH200, 900));
        var expected = Estimator.Estimate(model, new ClusterSpec(GpuPresets.All["h200"], 8, 8), asRun);
        Assert.Equal(asRun, v.Config);
        Assert.Equal(expected.StepTimeSeconds, v.Estimate.StepTimeSeconds, 12);
        Assert.NotEqual(expected.StepTimeSeconds, Estimator.Estimate(model, new ClusterSpec(GpuPresets.All["h200"], 8, 8), asRun with { Overlap = null }).StepTimeSeconds);
    }

    /// <summary>16-bit main gradients, the precision-aware optimizer's states and the fusion switches, as a run records them,
    /// reach the simulator: the estimate is the simulator's for that description, and its memory is not the default's.</summary>
    [Fact]
    public void PrecisionAndFusionSwitchesAreSimulatedAsRecorded()
    {
        var model = ModelPresets.All["gpt2-large"] with { HiddenDropout = 0, AttentionDropout = 0 };
        var plain = new RunDescription(DataParallel: 8, MicroBatch: 2, GlobalBatch: 16, ZeroStage: 1, Precision: Precision.Bf16, Implementation: TransformerImpl.Harness);
        var asRun = plain with { GradientsInFp32 = false, Adam = new AdamStates(PrecisionAware: true, ExpAvg: StateDtype.Bf16), FusedNorm = false, FusedElementwise = false };
        var v = RunValidation.Of(WriteRun(model, asRun, OnH200, 900));
        var cluster = new ClusterSpec(GpuPresets.All["h200"], 8, 8);
        Assert.Equal(asRun, v.Config);
        Assert.Equal(Estimator.Estimate(model, cluster, asRun).PeakMemoryBytes, v.Estimate.PeakMemoryBytes);
        Assert.NotEqual(Estimator.Estimate(model, cluster, plain).PeakMemoryBytes, v.Estimate.PeakMemoryBytes);
    }

    [Fact]
    public void AnotherPresetCanBeNamedAndRunsWithoutTheFusionFoldTheirGradients()
    {
        var folder = WriteRun(Caat, CaatRun with { GradientAccumulationFusion = false }, OnH200, 2000);
        var v = RunValidation.Of(folder, GpuPresets.All["h100-sxm"]);
        Assert.Equal("h100-sxm", v.Gpu);
        Assert.False(v.Config.GradientAccumulationFusion);
    }

    [Fact]
    public void ARunIsSimulatedWithTheDropoutItApplied()
    {
        // gpt2-large's spec has dropout; a run with --hidden-dropout 0 --attention-dropout 0 trained without it, and the
        // simulator's element-wise work follows the run.
        var gpt = ModelPresets.All["gpt2-large"];
        var description = new RunDescription(MicroBatch: 32, GlobalBatch: 32);
        var with = RunValidation.Of(WriteRun(gpt with { HiddenDropout = 0.1, AttentionDropout = 0.1 }, description, OnH200, 400));
        var without = RunValidation.Of(WriteRun(gpt with { HiddenDropout = 0, AttentionDropout = 0 }, description, OnH200, 400));
        Assert.True(with.Model.Dropout);
        Assert.False(without.Model.Dropout);
        Assert.True(with.Estimate.StepTimeSeconds > without.Estimate.StepTimeSeconds);
    }

    [Fact]
    public void CpuRunsRunsOfRanksOnOneDeviceAndFoldersWithoutASummaryAreOneSentence()
    {
        var cpu = WriteRun(Caat, CaatRun with { Precision = Precision.Fp32 }, OnH200 with { Device = ExecutionDevice.Cpu }, 2000);
        Assert.Contains("ran on CPU", Assert.Throws<RunValidationException>(() => RunValidation.Of(cpu)).Message);
        var oneGpu = WriteRun(Caat, CaatRun with { DataParallel = 2, GlobalBatch = 64 }, OnH200 with { NprocPerNode = 2, RanksOnOneDevice = true }, 2000);
        Assert.EndsWith("ran its 2 ranks on one device (--ranks-on-one-device); its times and memory are not a cluster's, so there is nothing to compare.",
            Assert.Throws<RunValidationException>(() => RunValidation.Of(oneGpu)).Message);
        var empty = Directory.CreateTempSubdirectory().FullName;
        Assert.Contains("holds no summary.json", Assert.Throws<RunValidationException>(() => RunValidation.Of(empty)).Message);
    }

    /// <summary>The results/ folder of the repository, where the runs made before summaries held the description are committed.</summary>
    private static string Results => Path.Combine(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(ExperimentFileTests.ExperimentsDir))!, "results");

    [Fact]
    public void SummariesCommittedBeforeTheDescriptionWasRecordedAreStillRead()
    {
        // A single-device run (its options in "Config": micro-batch 16, global 64, bf16, no recomputation, fused gradient
        // accumulation, no dropout field: trained without dropout) on the h200 preset it named.
        var single = RunValidation.Of(Path.Combine(Results, "executor", "nvidia-h200", "caat-1b-mbs16"));
        // Every summary is a run of this executor, costed with its kernels (--transformer-impl harness); the GPT path's kernels
        // came later (libtorch's operators ran there).
        var expected = new RunDescription(MicroBatch: 16, GlobalBatch: 64, Recompute: RecomputeSpec.None, Precision: Precision.Bf16, GradientAccumulationFusion: true,
            Implementation: TransformerImpl.Harness, FusedGptKernels: false);
        Assert.Equal(expected, single.Config);
        Assert.Equal("h200", single.Gpu);
        Assert.False(single.Model.Dropout);
        Assert.Equal(Estimator.Estimate(single.Model, new ClusterSpec(GpuPresets.All["h200"], 1, 1), expected).StepTimeSeconds, single.Estimate.StepTimeSeconds, 12);
        // A run on libtorch's operators only ("FusedKernels": false) is costed so, and so is one recorded before the kernels
        // existed (no field): Megatron's cross-entropy passes, unfused SwiGLU.
        var libtorch = RunValidation.Of(Path.Combine(Results, "executor", "nvidia-h200", "caat-1b-mbs16-libtorch-only"));
        Assert.Equal((false, false), (libtorch.Config.FusedKernels, libtorch.Config.FusedSwiGlu));
        var beforeKernels = RunValidation.Of(Path.Combine(Results, "executor", "h100-80gb-hbm3", "caat-1b-mbs8"));
        Assert.Equal((false, false), (beforeKernels.Config.FusedKernels, beforeKernels.Config.FusedSwiGlu));
        // A summary as harness run writes it (its Description as run), recorded before the GPT path's kernels: not run there.
        var gpt = RunValidation.Of(Path.Combine(Results, "executor", "nvidia-h200", "precision-2026-12-06", "gpt2-large-bf16"));
        Assert.True(gpt.Config.FusedKernels);
        Assert.False(gpt.Config.FusedGptKernels);
        // A parallel run: its layout in "Parallel".
        var parallel = RunValidation.Of(Path.Combine(Results, "parallel", "h100-1rank"));
        Assert.Equal((4, 8), (parallel.Config.MicroBatch, parallel.Config.GlobalBatch));
        Assert.Equal("h100-sxm", parallel.Gpu);
        // Every committed summary reads: compared, or skipped with a sentence (CPU runs, ranks sharing one GPU).
        foreach (var folder in Directory.EnumerateFiles(Results, "summary.json", SearchOption.AllDirectories).Select(Path.GetDirectoryName))
        {
            try { RunValidation.Of(folder!); }
            catch (RunValidationException e) { Assert.True(e.Message.Contains("ran on CPU") || e.Message.Contains("on one device (--ranks-on-one-device)"), e.Message); }
        }
    }

    /// <summary>A run of --deterministic-mode is compared as any other, its layout marked, and the output says what of its cost
    /// the simulator leaves out; a run without it says nothing of the kind.</summary>
    [Fact]
    public void ADeterministicRunIsMarkedWithWhatTheSimulatorLeavesOut()
    {
        var deterministic = WriteRun(Caat, CaatRun, OnH200 with { DeterministicMode = true }, 2000);
        var v = RunValidation.Of(deterministic);
        Assert.True(v.Deterministic);
        Assert.False(RunValidation.Of(WriteRun(Caat, CaatRun, OnH200, 2000)).Deterministic);
        string csv = Path.Combine(Path.GetDirectoryName(deterministic)!, "v.csv");
        var (code, output, _) = ConsoleCapture.Run(ValidateCommand.Run, Path.GetDirectoryName(deterministic)!, "--csv", csv);
        Assert.Equal(0, code);
        Assert.Contains("1 run(s) ran --deterministic-mode: flash's deterministic backward and libtorch's deterministic algorithms cost time the simulator does not model.", output);
        Assert.Contains("\"caat-1b d1 t1 p1 c1 b8 x8 selective recompute deterministic\"", File.ReadAllLines(csv)[1]);
    }

    [Fact]
    public void TheCommandComparesEveryRunUnderAFolderAndRejectsBadInput()
    {
        var run = WriteRun(Caat, CaatRun, OnH200, 2000);
        string parent = Path.GetDirectoryName(run)!, csv = Path.Combine(parent, "v.csv");
        string plot = Path.Combine(parent, "v.png");
        var (code, output, _) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--csv", csv, "--plot", plot);
        Assert.Equal(0, code);
        Assert.Contains("run-a", output);
        Assert.Equal(2, File.ReadAllLines(csv).Length);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(plot)[..4]);
        var (unwritable, _, plotError) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--plot", Path.Combine(csv, "v.png"));
        Assert.Equal(2, unwritable);
        Assert.Contains("--plot", plotError);
        Assert.Equal(2, ConsoleCapture.Run(ValidateCommand.Run).Code);
        var (badGpu, _, error) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--gpu", "tpu");
        Assert.Equal(2, badGpu);
        Assert.Contains("--gpu 'tpu' is not a preset", error);
        Assert.Equal(2, ConsoleCapture.Run(ValidateCommand.Run, Path.Combine(parent, "nowhere")).Code);
    }

    /// <summary>
    /// validate --offload: each rank's offload totals as summary.json records them beside the simulator's count of the same
    /// description, CPU runs included (bytes are not the device's), a rank one byte off said so; a run that offloaded
    /// without recording them is one sentence; --plot has nothing to draw.
    /// </summary>
    [Fact]
    public void OffloadSetsEachRanksBookkeepingBesideTheSimulatorsCount()
    {
        var model = ModelPresets.All["llama-7b"] with { NumLayers = 8, SeqLength = 1024 };
        var description = new RunDescription(PipelineParallel: 4, LayersPerVirtualStage: 1, MicroBatch: 1, GlobalBatch: 4, OffloadRatio: 0.25,
            Implementation: TransformerImpl.Harness);
        var costs = PipelineCosts.Build(model, new ClusterSpec(GpuPresets.All[GpuPresets.DefaultName], 4, 4), description);
        var totals = Enumerable.Range(0, 4).Select(r => RankOffload.Of(costs, r))
            .Select((o, r) => new OffloadTotals(o.Records, (long)o.Recorded + (r == 3 ? 1 : 0), (long)o.Offloaded, (long)o.Resident + (r == 3 ? 1 : 0))).ToList();
        Assert.Equal([8, 8, 8, 4], totals.Select(t => t.Records));
        Assert.All(totals, t => Assert.True(t.OffloadedBytes > 0 && t.ResidentBytes > 0));
        var run = WriteRun(model, description, new RunSettings(MockData: true), 2000, offloadPerRank: totals);
        string parent = Path.GetDirectoryName(run)!, csv = Path.Combine(parent, "offload.csv");
        var (code, output, _) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--offload", "--csv", csv);
        Assert.Equal(0, code);
        Assert.Contains("3 of 4 rank(s) equal to the byte", output);
        Assert.Contains("no: resident +1 B", output);
        var rows = File.ReadAllLines(csv);
        Assert.Equal(5, rows.Length);
        Assert.Equal([true, true, true, false], rows.Skip(1).Select(r => bool.Parse(r.Split(',')[^1])));
        var (plotted, _, plotError) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--offload", "--plot", Path.Combine(parent, "o.png"));
        Assert.Equal(2, plotted);
        Assert.Contains("with --offload there is no plot", plotError);
        var unrecorded = WriteRun(model, description, new RunSettings(MockData: true), 2000);
        var (skipped, _, why) = ConsoleCapture.Run(ValidateCommand.Run, unrecorded, "--offload");
        Assert.Equal(2, skipped);
        Assert.Contains("holds no OffloadPerRank", why);
        // On a GPU the embedding's dropout mask is libtorch's own: a run with hidden dropout there is one sentence; on CPU
        // ranks the same run compares.
        var dropout = model with { HiddenDropout = 0.1 };
        var onGpu = WriteRun(dropout, description, new RunSettings(MockData: true, Device: ExecutionDevice.Cuda), 2000, offloadPerRank: totals);
        var (refused, _, reason) = ConsoleCapture.Run(ValidateCommand.Run, onGpu, "--offload");
        Assert.Equal(2, refused);
        Assert.Contains("ran on a GPU with hidden dropout 0.1: libtorch's dropout kernel keeps its masks (the embedding's among them) inside itself", reason);
        // On CPU ranks it compares, with the first chunk's cut holding the embedding's mask: rank 0's count is not the one without.
        var dropoutCosts = PipelineCosts.Build(dropout, new ClusterSpec(GpuPresets.All[GpuPresets.DefaultName], 4, 4), description);
        var dropoutTotals = Enumerable.Range(0, 4).Select(r => RankOffload.Of(dropoutCosts, r))
            .Select(o => new OffloadTotals(o.Records, (long)o.Recorded, (long)o.Offloaded, (long)o.Resident)).ToList();
        Assert.NotEqual(totals[0], dropoutTotals[0]);
        var (compared, onCpu, _) = ConsoleCapture.Run(ValidateCommand.Run, WriteRun(dropout, description, new RunSettings(MockData: true), 2000, offloadPerRank: dropoutTotals), "--offload");
        Assert.Equal(0, compared);
        Assert.Contains("4 of 4 rank(s) equal to the byte", onCpu);
    }
}
