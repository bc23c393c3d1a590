using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// The simulator as the search's cost function: <see cref="Estimator.Estimate"/> (the stage-by-stage schedule)
/// evaluates, <see cref="Estimator.EstimateClosedForm"/> screens; the bounds come from the same per-chunk costs
/// (<see cref="PipelineCosts"/>) the schedule runs on.
/// </summary>
public sealed class EstimatorCostModel : ISearchCostModel
{
    public static EstimatorCostModel Instance { get; } = new();

    public CostPoint Evaluate(ModelSpec model, ClusterSpec cluster, RunDescription config) =>
        ToCostPoint(Estimator.Estimate(model, cluster, config));

    public double Screen(ModelSpec model, ClusterSpec cluster, RunDescription config) =>
        Estimator.EstimateClosedForm(model, cluster, config).StepTimeSeconds;

    public static CostPoint ToCostPoint(StepEstimate e) =>
        new(e.StepTimeSeconds, e.ReservedBytes, e.TokensPerSecondPerGpu, e.Mfu, BiggestCost(e.Time, e.StepTimeSeconds));

    public long StaticMemoryLowerBound(ModelSpec model, ClusterSpec cluster, RunDescription config)
    {
        var k = PipelineCosts.Build(model, cluster, config);
        return (long)Math.Floor(Math.Max(k.Middle.State.Total, Math.Max(k.First.State.Total, k.Last.State.Total)));
    }

    /// <summary>
    /// Time: the last pipeline rank cannot start before micro-batch 1 has gone forward through a chunk on each of
    /// the p−1 ranks before it (chunks of their own lengths with uneven stages), then does all its own work (m micro-batches of v chunks plus the output layer),
    /// and the step cannot end before the last micro-batch's gradient has gone back through a chunk on each of
    /// them and the optimizer has stepped: T ≥ m·work(last) + (p−1)·(F + B) + optimizer + weight all-gather
    /// (Narayanan et al. 2021, §2.2: with uniform chunks the schedule's makespan is exactly (m·v + p − 1)·(F + B)).
    /// Offload only adds stalls. Also at least the FLOP count at peak (<see cref="ComputeBound"/>).
    /// Memory: the weights, gradients and optimizer states, the backward temporaries, which are live at the peak whatever
    /// the offload ratio, and the activations of the chunks a rank holds at its first backward, as the allocator reserves them.
    /// </summary>
    public CostBounds Bounds(ModelSpec model, ClusterSpec cluster, RunDescription config)
    {
        var k = PipelineCosts.Build(model, cluster, config);
        int last = k.P - 1;
        double fill = 0;
        for (int r = 0; r < last; r++) fill += k.ChunkOf(r, 0).Forward + k.ChunkOf(r, 0).Backward;
        double pipeline = k.M * k.RankWorkPerMicroBatch(last) + fill;
        double time = Math.Max(pipeline + k.Last.Optimizer + k.Last.ParameterGather, ComputeBound.StepTimeLowerBound(model, cluster, config));
        // Each of the first, a middle and the last rank: at its peak a backward runs, over the chunks whose forwards it has
        // run and not yet gone back through. Without offload those are its warm-up forwards and the one before its first
        // backward (ScheduleOrder.Warmup; none is freed before its own backward); where larger offload ratios are valid
        // (RunDescription.Validate: interleaved, p >= 3), which free a forward's activations early, at least the chunk the
        // backward runs over.
        bool offloadValid = config.LayersPerVirtualStage is not null && k.P >= 3;
        double memory = 0;
        foreach (int r in (ReadOnlySpan<int>)[0, Math.Min(1, last), last])
        {
            int held = config.OffloadRatio == 0 && !offloadValid ? Math.Min(ScheduleOrder.Warmup(k.P, k.V, k.M, r) + 1, k.M * k.V) : 1;
            double smallest = double.PositiveInfinity;
            for (int chunk = 0; chunk < k.V; chunk++) smallest = Math.Min(smallest, k.ChunkOf(r, chunk).Activations);
            memory = Math.Max(memory, MemoryBudget.ReservedBytes(k.Rank(r).State.Total,
                held * smallest + k.BackwardTransient + (r == last ? k.LastBackwardTransient : 0), config));
        }
        return new CostBounds(time, (long)Math.Floor(memory));
    }

    /// <summary>The largest entry of the step-time breakdown besides compute, with its share: "bubble 12%".</summary>
    public static string BiggestCost(TimeBreakdown t, double step)
    {
        var (name, seconds) = t.Parts.Where(p => p.Name != "compute").MaxBy(p => p.Seconds);
        return $"{name} {100 * seconds / step:0}%";
    }
}
