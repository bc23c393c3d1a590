using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>What the search needs to know of one evaluated configuration. <paramref name="PeakMemoryBytes"/> is what the
/// caching allocator reserves at the peak (the allocated peak with its fragmentation, Costs.MemoryBudget.ReservedBytes): the
/// figure a GPU's memory, and the search's memory limit, must hold.</summary>
/// <param name="BiggestCost">The largest named entry of the step-time breakdown besides compute (e.g. "bubble 12%").</param>
public readonly record struct CostPoint(
    double StepTimeSeconds,
    long PeakMemoryBytes,
    double TokensPerSecondPerGpu,
    double Mfu,
    string BiggestCost);

/// <summary>Lower bounds on step time and reserved peak memory (see <see cref="ISearchCostModel.Bounds"/> for what they cover).</summary>
public readonly record struct CostBounds(double StepTimeSeconds, long PeakMemoryBytes);

/// <summary>
/// The search's cost function and its bounds. The search is exhaustive (it returns the best of its space, not a
/// local optimum) as long as the bounds hold and, with everything else fixed, step time does not decrease and
/// peak memory does not increase as the offload ratio grows (offload only moves bytes off the GPU, and its
/// transfers can only stall). <see cref="Searcher"/> checks all of this on every evaluation it makes and reports
/// any violation.
/// </summary>
public interface ISearchCostModel
{
    /// <summary>The full evaluation of one valid configuration.</summary>
    CostPoint Evaluate(ModelSpec model, ClusterSpec cluster, RunDescription config);

    /// <summary>
    /// A quick estimate of a valid configuration's step time, used only to order the search (promising layouts
    /// first, so the bounds bite early): its accuracy changes how fast the search is, never what it returns.
    /// </summary>
    double Screen(ModelSpec model, ClusterSpec cluster, RunDescription config);

    /// <summary>
    /// Lower bounds for <paramref name="config"/> and every configuration that differs from it only by a larger
    /// offload ratio. When <paramref name="config"/> has no recomputation, the time bound also holds for every
    /// recomputation (recomputation only adds work). Must be cheap: it prunes before evaluating.
    /// </summary>
    CostBounds Bounds(ModelSpec model, ClusterSpec cluster, RunDescription config);

    /// <summary>
    /// A lower bound on the peak memory of every configuration sharing this one's layout and ZeRO stage
    /// (any recomputation, offload ratio and sync factor): weights, gradients and optimizer states.
    /// </summary>
    long StaticMemoryLowerBound(ModelSpec model, ClusterSpec cluster, RunDescription config);
}
