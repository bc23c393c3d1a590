using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>
/// Runs every row of a published table through the simulator and compares with the published values.
/// Where the paper leaves a knob out (<see cref="Experiment.Choose"/>), every candidate is simulated and the
/// fastest configuration that fits is kept, as the authors tuned theirs; the row reports its choice.
/// </summary>
public sealed class Reproducer(StepSimulator simulate)
{
    /// <summary>Every table, then the pooled errors.</summary>
    public ReproductionSummary Run(IEnumerable<Experiment> experiments) => new(experiments.Select(Run).ToList());

    /// <summary>One table.</summary>
    public TableResult Run(Experiment e)
    {
        var rows = e.Rows.Select(row => RunRow(e, row)).ToList();
        var errors = ErrorStats.Of(rows.Where(r => r.Error is not null).Select(r => (r.Row.Label, r.Error!.Value)));
        return new TableResult(e, rows, errors, CheckOrder(e, rows));
    }

    private RowResult RunRow(Experiment e, ExperimentRow row)
    {
        var setup = RowSetup.Resolve(e, row);
        var candidates = Candidates(e, setup).ToList();
        if (candidates.Count == 0)
        {
            var reasons = setup.Config.Validate(setup.Model, setup.Cluster.WorldSize);
            throw new ExperimentException($"{e.Name}, row '{row.Label}': {(reasons.Count > 0 ? reasons[0] : "no valid configuration to try.")}");
        }
        var simulated = candidates.Select(c => (Config: c, Step: simulate(setup.Model, setup.Cluster, c))).ToList();
        // The fastest that fits; if nothing fits, the fastest (and the row reports that it does not fit).
        var best = simulated.Where(s => s.Step.Fits).DefaultIfEmpty(simulated.MaxBy(s => s.Step.TokensPerSecondPerGpu))
            .MaxBy(s => s.Step.TokensPerSecondPerGpu);
        var chosen = setup with { Config = best.Config };
        var counter = PaperFlopCounter.For(e, setup.Cluster.Gpu);
        double tokens = best.Step.TokensPerSecondPerGpu;
        double value = e.PaperMetric switch
        {
            PaperMetric.TokensPerSecondPerGpu => tokens,
            PaperMetric.TokensPerSecond => tokens * setup.Cluster.WorldSize,
            PaperMetric.TflopsPerGpu => counter.TflopsPerGpu(chosen.Model, chosen.Config, tokens),
            _ => best.Step.PeakMemoryBytes,
        };
        return new RowResult(row, chosen, best.Step, e.PaperMetric.Published(row.Published), value,
            counter.FractionOfPeak(chosen.Model, chosen.Config, tokens), DescribeChoice(e, setup, best.Config));
    }

    /// <summary>The configurations to simulate: the row's own, or one per combination of the knobs left to choose.</summary>
    private static IEnumerable<RunDescription> Candidates(Experiment e, RowSetup s)
    {
        var micro = !s.Args.Sets("micro-batch-size") && e.Choose?.MicroBatchSizes is { } list
            ? list : [s.Config.MicroBatch];
        var layers = !s.Args.Sets("num-layers-per-virtual-pipeline-stage") && e.Choose?.LayersPerVirtualStage == "divisors"
            ? InterleavingChoices(s.Config.LayersInPipelineSplit(s.Model), s.Config.PipelineParallel) : [s.Config.LayersPerVirtualStage];
        foreach (int b in micro)
            foreach (int? l in layers)
            {
                var c = s.Config with { MicroBatch = b, LayersPerVirtualStage = l };
                if (c.Validate(s.Model, s.Cluster.WorldSize).Count == 0) yield return c;
            }
    }

    /// <summary>
    /// Layers per virtual stage for a table run with the interleaved schedule: every divisor of the layers per
    /// pipeline rank (of the <paramref name="splitLayers"/> the split divides) leaving at least two chunks; without
    /// pipelining, no interleaving.
    /// </summary>
    private static IReadOnlyList<int?> InterleavingChoices(int splitLayers, int p)
    {
        if (p < 2) return [null];
        int perRank = splitLayers / p;
        return Enumerable.Range(1, perRank / 2).Where(l => perRank % l == 0).Select(l => (int?)l).ToList();
    }

    private static string DescribeChoice(Experiment e, RowSetup s, RunDescription c)
    {
        var parts = new List<string>();
        if (!s.Args.Sets("micro-batch-size") && e.Choose?.MicroBatchSizes is not null)
            parts.Add($"micro-batch {c.MicroBatch}");
        if (!s.Args.Sets("num-layers-per-virtual-pipeline-stage") && e.Choose?.LayersPerVirtualStage is not null && c.LayersPerVirtualStage is int l)
            parts.Add($"{l} layer{(l > 1 ? "s" : "")} per virtual stage (v = {c.VirtualStages(s.Model)})");
        return string.Join(", ", parts);
    }

    /// <summary>Within each group, the methods named in the table's order must come out in that order, best first.</summary>
    private static OrderCheck CheckOrder(Experiment e, IReadOnlyList<RowResult> rows)
    {
        var violations = new List<string>();
        if (e.Order is { Count: > 1 } order)
            foreach (var group in rows.Where(r => r.Row.Method is not null && !r.Row.Published.Oom).GroupBy(r => r.Row.Group ?? ""))
            {
                var ranked = order.Select(m => group.FirstOrDefault(r => r.Row.Method == m)).OfType<RowResult>().ToList();
                for (int i = 0; i + 1 < ranked.Count; i++)
                    if (!(ranked[i].Simulated > ranked[i + 1].Simulated))
                        violations.Add($"{ranked[i].Row.Label} ({ranked[i].Simulated:G4}) should beat {ranked[i + 1].Row.Label} ({ranked[i + 1].Simulated:G4})");
            }
        return new OrderCheck(violations.Count == 0, violations);
    }
}
