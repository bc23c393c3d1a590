namespace Harness.Reproduce;

/// <summary>What the simulator predicts for one configuration, as much of it as a reproduction compares.</summary>
public sealed record SimulatedStep(double StepTimeSeconds, double TokensPerSecondPerGpu, long PeakMemoryBytes, bool Fits);

/// <summary>The simulator as a reproduction sees it: one configuration in, one prediction out.</summary>
public delegate SimulatedStep StepSimulator(Harness.Simulator.Specs.ModelSpec model,
    Harness.Simulator.Specs.ClusterSpec cluster, Harness.Simulator.Specs.RunDescription config);

/// <summary>
/// One row reproduced: the configuration simulated (with any knob the reproduction chose, in <see cref="Choice"/>),
/// the prediction, the published and simulated metric and the relative error (null for OOM rows).
/// </summary>
public sealed record RowResult(
    ExperimentRow Row,
    RowSetup Setup,
    SimulatedStep Step,
    double? Published,
    double Simulated,
    double SimulatedFractionOfPeak,
    string Choice)
{
    /// <summary>(simulated − published) / published; null where the paper reports no value (OOM).</summary>
    public double? Error => Published is { } p && p != 0 ? (Simulated - p) / p : null;

    /// <summary>True when the simulator's fits/does-not-fit agrees with the paper (published OOM ⇔ not fitting).</summary>
    public bool FitDecisionRight => Row.Published.Oom != Step.Fits;
}

/// <summary>Mean absolute percentage error and the worst row, over rows with a published value.</summary>
public sealed record ErrorStats(int Count, double Mape, double MaxAbs, string? Worst)
{
    public static ErrorStats Of(IEnumerable<(string Label, double Error)> errors)
    {
        var list = errors.ToList();
        if (list.Count == 0) return new(0, 0, 0, null);
        var worst = list.MaxBy(e => Math.Abs(e.Error));
        return new(list.Count, list.Average(e => Math.Abs(e.Error)), Math.Abs(worst.Error), worst.Label);
    }
}

/// <summary>
/// Whether the simulated metric ranks the methods of each group as the table's "order" says (first is best);
/// violations say which pair came out the wrong way round.
/// </summary>
public sealed record OrderCheck(bool Right, IReadOnlyList<string> Violations);

/// <summary>One table reproduced.</summary>
public sealed record TableResult(Experiment Experiment, IReadOnlyList<RowResult> Rows, ErrorStats Errors, OrderCheck Order)
{
    public int FitDecisionsRight => Rows.Count(r => r.FitDecisionRight);
}

/// <summary>Every table reproduced, with the errors pooled over the throughput tables and over the memory tables
/// (the targets), and separately over the held-out throughput tables (the generalization check).</summary>
public sealed record ReproductionSummary(IReadOnlyList<TableResult> Tables)
{
    public ErrorStats Throughput => Pool(t => !t.Experiment.HeldOut && t.Experiment.PaperMetric.IsThroughput());
    public ErrorStats Memory => Pool(t => !t.Experiment.HeldOut && !t.Experiment.PaperMetric.IsThroughput());
    public ErrorStats HeldOut => Pool(t => t.Experiment.HeldOut);
    public int FitDecisionsRight => Tables.Sum(t => t.FitDecisionsRight);
    public int FitDecisions => Tables.Sum(t => t.Rows.Count);
    public bool OrderRight => Tables.All(t => t.Order.Right);

    private ErrorStats Pool(Func<TableResult, bool> which) => ErrorStats.Of(
        Tables.Where(which).SelectMany(t => t.Rows)
            .Where(r => r.Error is not null)
            .Select(r => ($"{r.Row.Label}", r.Error!.Value)));
}
