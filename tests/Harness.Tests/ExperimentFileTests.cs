using Harness.Reproduce;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>The experiment files hold the published tables of REFERENCE.md, and resolve to the configurations the papers ran.</summary>
public class ExperimentFileTests
{
    internal static string ExperimentsDir =>
        ExperimentLoader.FindExperimentsDirectory(AppContext.BaseDirectory)
        ?? throw new InvalidOperationException("experiments/ not found above the test binaries");

    internal static Experiment Load(string name) => ExperimentLoader.Resolve(name, ExperimentsDir).Single();

    [Fact]
    public void AllFilesLoad()
    {
        var names = ExperimentLoader.Resolve("all", ExperimentsDir).Select(e => e.Name).ToList();
        Assert.Equal(new[] { "dubey-2024-llama3-405b", "korthikanti-2022-table4", "kwai-atc24-7b-demo", "kwai-atc24-fig7-memory", "kwai-atc24-fig9", "kwai-atc24-table8", "narayanan-2021-table1", "shoeybi-2019-scaling", "smith-2022-mtnlg-530b" }, names);
    }

    /// <summary>A row's implementation flag where its system sets the same field would be overwritten silently: refused.</summary>
    [Fact]
    public void ARowCannotSetWhatItsSystemSets()
    {
        var e = Load("kwai-atc24-table8");
        var row = e.Rows[0];
        var json = System.Text.Json.JsonSerializer.Serialize(row.Args!.Over(new ExperimentArgs(new Dictionary<string, System.Text.Json.JsonElement>
        {
            ["tp-comm-overlap"] = System.Text.Json.JsonDocument.Parse("true").RootElement,
        })));
        var args = System.Text.Json.JsonSerializer.Deserialize<ExperimentArgs>(json)!;
        var error = Assert.Throws<ExperimentException>(() => RowSetup.Resolve(e, row with { Args = args }));
        Assert.Contains("sets tp-comm-overlap, which its system also sets", error.Message);
    }

    [Fact]
    public void NarayananTable1HoldsTheTenRowsAndCountsFWithRecompute()
    {
        var e = Load("narayanan-2021-table1");
        Assert.Equal(new double[] { 137, 138, 142, 135, 138, 140, 148, 155, 163, 163 }, e.Rows.Select(r => r.Published.TflopsPerGpu!.Value));
        var last = RowSetup.Resolve(e, e.Rows[^1]);
        Assert.Equal((8, 64, 6), (last.Config.TensorParallel, last.Config.PipelineParallel, last.Config.DataParallel));
        // The authors' launch script (examples/sc21/run_table_1.sh): micro-batch 16/16/16/8/4/2/2/1/1/1, interleaved
        // with 5, 5, 3 and 1 layers per virtual stage for 76.1B-529.6B, plain 1F1B for 39.1B and 1T.
        var configs = e.Rows.Select(r => RowSetup.Resolve(e, r).Config).ToList();
        Assert.Equal(new[] { 16, 16, 16, 8, 4, 2, 2, 1, 1, 1 }, configs.Select(c => c.MicroBatch));
        Assert.Equal(new int?[] { null, null, null, null, null, 5, 5, 3, 1, null }, configs.Select(c => c.LayersPerVirtualStage));
        // TFLOP/s per GPU counts F = 96 B s L h^2 (1 + s/(6h) + V/(16 L h)) per iteration: per token, for the 1T model.
        double L = 128, h = 25600, s = 2048, V = 51200;
        double f = 96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h));
        var counter = PaperFlopCounter.For(e, last.Cluster.Gpu);
        Assert.Equal(f, counter.FlopsPerToken(last.Model, last.Config), 1e-9 * f);
        Assert.Equal(312e12, counter.PeakFlops);
    }

    [Fact]
    public void KwaiTable8RowsAreTheArtifactsConfigurations()
    {
        var e = Load("kwai-atc24-table8");
        var theirs = RowSetup.Resolve(e, e.Rows.Single(r => r.Method == "theirs"));
        Assert.Equal((4, 1, 8, 8, 2), (theirs.Config.TensorParallel, theirs.Config.ContextParallel, theirs.Config.PipelineParallel, theirs.Config.DataParallel, theirs.Config.LayersPerVirtualStage));
        Assert.Equal(0.63, theirs.Config.OffloadRatio);
        Assert.True(theirs.Config.RecomputeOrNone is { NormOutputs: true, MlpActivation: true, Granularity: RecomputeGranularity.None });
        Assert.True(theirs.Config.SequenceParallel && theirs.Config.DistributedOptimizer && theirs.Config.AttentionBackend == AttentionBackend.Flash);
        var baseline = RowSetup.Resolve(e, e.Rows.Single(r => r.Method == "their baseline"));
        Assert.Equal((2, 2, 16, 4), (baseline.Config.TensorParallel, baseline.Config.ContextParallel, baseline.Config.PipelineParallel, baseline.Config.DataParallel));
        Assert.Equal(RecomputeGranularity.Full, baseline.Config.RecomputeOrNone.Granularity);
        Assert.Single(e.Rows, r => r.Published.Oom);
        // The artifact's MFU is tokens/s/GPU x 3 [L (8h^2 + 6 h ffn + 2 s h) + 2 h V] / 989 TFLOP/s: 299 tokens/s is 33.4%.
        var counter = PaperFlopCounter.For(e, baseline.Cluster.Gpu);
        Assert.Equal(0.334, counter.FractionOfPeak(baseline.Model, baseline.Config, 299), 3);
        Assert.Equal(0.432, counter.FractionOfPeak(theirs.Model, theirs.Config, 387), 3);
    }

    [Fact]
    public void KwaiFigure9IsHeldOutWithFortyOneRuns()
    {
        var e = Load("kwai-atc24-fig9");
        Assert.True(e.HeldOut);
        Assert.Equal(PaperMetric.TokensPerSecond, e.PaperMetric);
        Assert.Equal(41, e.Rows.Count);
        Assert.DoesNotContain(e.Rows, r => r.Published.Oom);
        // Llama2-70B on 224 GPUs: t2 c4 p4 l4 (v 5), global batch 252, 'ours' recompute, alpha 0.352.
        var s = RowSetup.Resolve(e, e.Rows.Single(r => r.Label == "Llama2-70B s8192 224 GPUs"));
        Assert.Equal((2, 4, 4, 7, 5, 252), (s.Config.TensorParallel, s.Config.ContextParallel, s.Config.PipelineParallel,
            s.Config.DataParallel, s.Config.VirtualStages(s.Model), s.Config.GlobalBatch));
        Assert.Equal(0.352, s.Config.OffloadRatio);
        Assert.True(s.Config.RecomputeOrNone is { NormOutputs: true, MlpActivation: true });
        Assert.Equal((8, 8192), (s.Model.NumQueryGroups, s.Model.SeqLength));
    }

    [Fact]
    public void Kwai7bDemoMfuFollowsFromThroughputOnEachGpu()
    {
        var e = Load("kwai-atc24-7b-demo");
        foreach (var row in e.Rows.Where(r => !r.Published.Oom))
        {
            var s = RowSetup.Resolve(e, row);
            var counter = PaperFlopCounter.For(e, s.Cluster.Gpu);
            Assert.Equal(row.Published.Mfu!.Value, counter.FractionOfPeak(s.Model, s.Config, row.Published.TokensPerSecondPerGpu!.Value), 3);
        }
    }

    [Fact]
    public void Fig7HoldsTwentyTwoPointsThreeOfThemOom()
    {
        var e = Load("kwai-atc24-fig7-memory");
        Assert.Equal(22, e.Rows.Count);
        Assert.Equal(3, e.Rows.Count(r => r.Published.Oom));
        Assert.Equal(65330982400, e.Rows.Single(r => r.Label == "recompute ours, alpha 0.0").Published.PeakMemoryBytes);
        var s = RowSetup.Resolve(e, e.Rows[0]);
        Assert.Equal((2, 2, 8, 8, 5), (s.Config.TensorParallel, s.Config.ContextParallel, s.Config.PipelineParallel, s.Config.DataParallel, s.Config.VirtualStages(s.Model)));
    }

    [Fact]
    public void ShoeybiRowsOverrideThePresetShape()
    {
        var e = Load("shoeybi-2019-scaling");
        var big = RowSetup.Resolve(e, e.Rows[1]);
        Assert.Equal((72, 3072, 32, 32, 1024, 51200), (big.Model.NumLayers, big.Model.HiddenSize, big.Model.NumAttentionHeads, big.Model.NumQueryGroups, big.Model.SeqLength, big.Model.VocabSize));
        Assert.Equal((8, 64), (big.Config.TensorParallel, big.Config.DataParallel));
        Assert.Equal(Precision.Fp16, big.Config.Precision);
    }

    [Fact]
    public void AMisspeltKnobIsRejectedWithItsName()
    {
        string path = Path.Combine(TestTemp.Root, $"harness-bad-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, File.ReadAllText(Path.Combine(ExperimentsDir, "kwai-atc24-table8.json"))
            .Replace("\"tensor-model-parallel-size\": 4", "\"tensor-model-paralel-size\": 4"));
        try
        {
            var ex = Assert.Throws<ExperimentException>(() => ExperimentLoader.Load(path));
            Assert.Contains("tensor-model-paralel-size", ex.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void AnUnknownNameListsTheValidOnes()
    {
        var ex = Assert.Throws<ExperimentException>(() => ExperimentLoader.Resolve("kwai-table9", ExperimentsDir));
        Assert.Contains("kwai-atc24-table8", ex.Message);
    }
}
