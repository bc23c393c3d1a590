using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>Why a subtree of the space was skipped without evaluating its configurations.</summary>
public enum PruneRule
{
    /// <summary>Weights, gradients and optimizer states alone exceed the memory limit (every recompute and offload).</summary>
    WeightsExceedMemory,
    /// <summary>The time bound of the layout and ZeRO stage with no recomputation and the least offload, with the
    /// weights-and-optimizer memory, already loses to the top K and the Pareto front.</summary>
    LayoutTimeBound,
    /// <summary>This recomputation's time and memory bounds (or its evaluation at the least offload) already lose.</summary>
    RecomputeBound,
    /// <summary>This recomputation's memory bound exceeds the limit at every offload ratio, and something already fits (so the
    /// configurations closest to fitting, reported only when nothing fits, are not needed).</summary>
    RecomputeMemoryBound,
    /// <summary>Does not fit: memory at a larger offload ratio already exceeds the limit, and memory only falls as offload grows.</summary>
    OffloadMemoryBound,
    /// <summary>Larger offload ratios are only slower, and already lose.</summary>
    OffloadTimeBound,
}

/// <summary>How much of the space the search enumerated, pruned (by rule) and evaluated, and how long it took.</summary>
public sealed record SearchCounts(
    long Enumerated,
    long Evaluated,
    IReadOnlyDictionary<PruneRule, long> Pruned,
    long BoundViolations,
    IReadOnlyList<string> ViolationExamples,
    int Layouts,
    TimeSpan WallTime)
{
    public long PrunedTotal => Pruned.Values.Sum();

    /// <summary>Configurations settled (evaluated or proven unable to matter) per second of wall time.</summary>
    public double ConfigsPerSecond => Enumerated / Math.Max(WallTime.TotalSeconds, 1e-9);

    /// <summary>Full evaluations per second of wall time.</summary>
    public double EvaluationsPerSecond => Evaluated / Math.Max(WallTime.TotalSeconds, 1e-9);
}

/// <summary>The smallest weights-plus-optimizer footprint seen among layouts pruned for it (the why of "nothing fits").</summary>
public sealed record StaticMemoryMiss(RunDescription Config, long StaticBytes);

/// <summary>The outcome of a search: the top K, the Pareto front, the near misses (complete when nothing fits: once something
/// does, subtrees that cannot fit are pruned unevaluated) and the counts.</summary>
public sealed record SearchResult(
    SearchSpace Space,
    SearchOptions Options,
    IReadOnlyList<Evaluated> Top,
    IReadOnlyList<Evaluated> ParetoFront,
    IReadOnlyList<Evaluated> NearMisses,
    StaticMemoryMiss? SmallestStaticMiss,
    IReadOnlyList<Evaluated> Evaluations,
    SearchCounts Counts)
{
    public Evaluated? Best => Top.Count > 0 ? Top[0] : null;
}

/// <summary>How the search runs (not what it searches).</summary>
public sealed record SearchOptions
{
    /// <summary>How many of the best configurations to return.</summary>
    public int TopK { get; init; } = 10;
    /// <summary>
    /// The Pareto front holds configs with at least this fraction of the best throughput (0: the whole front).
    /// Default one half: the trade-offs a user weighs, without exact work on layouts at a few percent MFU whose
    /// only merit is a tiny footprint. The top K is exact whatever this is.
    /// </summary>
    public double ParetoMinThroughputFraction { get; init; } = 0.5;
    /// <summary>Worker threads; default every core.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
    /// <summary>Keep every evaluated configuration (for the CSV); off for benchmarks.</summary>
    public bool KeepEvaluations { get; init; } = true;
}

/// <summary>Layouts done out of the total, readable while the search runs (for a progress bar).</summary>
public sealed class SearchProgress
{
    private long _done;
    public long Total { get; internal set; }
    public long Done => Interlocked.Read(ref _done);
    internal void Step() => Interlocked.Increment(ref _done);
}
