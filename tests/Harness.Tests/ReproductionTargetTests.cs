using Harness.Reproduce;

namespace Harness.Tests;

/// <summary>
/// The simulator against the published tables (issue 4's targets), so that a change to the model that makes a
/// reproduction worse fails CI. Where a target is not met yet, the test pins today's accuracy instead and says so:
/// it fails on any regression, and is tightened as the model improves. Every target is met today.
/// </summary>
public class ReproductionTargetTests
{
    private static readonly Lazy<ReproductionSummary> All = new(() =>
        new Reproducer(SimulatorSteps.Estimate).Run(ExperimentLoader.Resolve("all", ExperimentFileTests.ExperimentsDir)));

    private static TableResult Table(string name) => All.Value.Tables.Single(t => t.Experiment.Name == name);

    /// <summary>Every fit/OOM decision is right but Llama 3 405B's on Meta's stack (held out), which ran on 80 GB H100s without
    /// recomputation where the simulator's Megatron-core accounting of its activations exceeds the GPU: a known gap, pinned so
    /// that closing it shows.</summary>
    [Fact]
    public void EveryFitAndOomDecisionIsRight()
    {
        var wrong = All.Value.Tables.SelectMany(t => t.Rows.Select(r => (t.Experiment.Name, Row: r)))
            .Where(x => !x.Row.FitDecisionRight).Select(x => x.Name).ToList();
        Assert.Equal(["dubey-2024-llama3-405b", "dubey-2024-llama3-405b"], wrong);
        Assert.Equal(100, All.Value.FitDecisions);
    }

    [Fact]
    public void MethodsComeOutInThePublishedOrder()
    {
        // Kwai's method > their baseline > NVIDIA Megatron-LM, on A800 and H800 (7B) and at 175B.
        foreach (var t in All.Value.Tables)
            Assert.True(t.Order.Right, $"{t.Experiment.Name}: {string.Join("; ", t.Order.Violations)}");
    }

    [Theory]
    // Issue 4's per-table target (MAPE <= 3%, every row within 6%), pinned tighter where today's accuracy is:
    [InlineData("kwai-atc24-7b-demo", 0.03, 0.06)]
    [InlineData("shoeybi-2019-scaling", 0.03, 0.06)]
    // with the authors' micro-batch sizes and interleaving (2.0%, worst 76.1B +5.8%);
    [InlineData("narayanan-2021-table1", 0.021, 0.059)]
    // 175B on 256 H800 (2.7%, worst NVIDIA Megatron-LM +3.7%).
    [InlineData("kwai-atc24-table8", 0.028, 0.038)]
    public void TableMeetsTheThroughputTarget(string table, double mape, double max)
    {
        var t = Table(table);
        Assert.InRange(t.Errors.Mape, 0, mape);
        Assert.InRange(t.Errors.MaxAbs, 0, max);
    }

    [Fact]
    public void Figure7MemoryIsWithinTwoPercent()
    {
        var t = Table("kwai-atc24-fig7-memory");
        Assert.Equal(19, t.Errors.Count);
        // Issue 4's target, every point within 2%, pinned tighter at today's accuracy (MAPE 0.43%, worst 1.15%: recompute
        // none at alpha 1, whose peak is the last stage's, at the loss).
        Assert.All(t.Rows.Where(r => r.Error is not null), r => Assert.InRange(Math.Abs(r.Error!.Value), 0, 0.02));
        Assert.InRange(t.Errors.Mape, 0, 0.0045);
        Assert.InRange(t.Errors.MaxAbs, 0, 0.012);
    }

    [Fact]
    public void OverallThroughputMeetsTheTarget()
    {
        // Issue 4: mean absolute error <= 3% and no row worse than 6% over all the target tables (today 2.1%, worst
        // Narayanan's 76.1B row at +5.8%).
        Assert.Equal(21, All.Value.Throughput.Count);
        Assert.InRange(All.Value.Throughput.Mape, 0, 0.022);
        Assert.InRange(All.Value.Throughput.MaxAbs, 0, 0.06);
    }

    [Fact]
    public void HeldOutKorthikanti2022DoesNotRegress()
    {
        // Korthikanti et al.'s iteration times (GPT 22B-1T on 8-512 A100, full recomputation vs sequence parallelism with
        // selective recomputation), Calculon's own validation set (3.65% mean, 8.87% worst for Calculon): no constant set
        // from it. Today 2.1%, worst 22B with sequence parallelism at +4.0%.
        var t = Table("korthikanti-2022-table4");
        Assert.Equal(8, t.Errors.Count);
        Assert.InRange(t.Errors.Mape, 0, 0.022);
        Assert.InRange(t.Errors.MaxAbs, 0, 0.041);
    }

    [Fact]
    public void HeldOutKwaiFigure9DoesNotRegress()
    {
        // Megatron-Kwai's Figure 9 (41 runs on 32-256 H800): a generalization check, no constant set from it. Pinned at
        // today's accuracy so that a change fitted to the target tables and worse here fails: 1.8%, worst Llama-175B on
        // 64 GPUs at -5.5%.
        var t = Table("kwai-atc24-fig9");
        Assert.Equal(54, All.Value.HeldOut.Count);
        Assert.InRange(t.Errors.Mape, 0, 0.019);
        Assert.InRange(t.Errors.MaxAbs, 0, 0.056);
    }
}
