using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>What the search needs to know of one evaluated configuration.</summary>
/// <param name="BiggestCost">The largest named entry of the step-time breakdown (e.g. "compute", "bubble").</param>
public readonly record struct CostPoint(
    double StepTimeSeconds,
    long PeakMemoryBytes,
    double TokensPerSecondPerGpu,
    double Mfu,
    string BiggestCost);

/// <summary>
/// The search's cost function. The search is exhaustive (it returns the best of its space, not a local optimum)
/// as long as these hold; <see cref="Searcher"/> checks each at run time on every evaluation it makes and
/// reports any violation:
/// <list type="number">
/// <item>step time is at least <see cref="StepTimeLowerBound"/>;</item>
/// <item>peak memory is at least <see cref="StaticMemoryLowerBound"/>;</item>
/// <item>with everything else fixed, no recomputation is faster than none (recomputation only adds work);</item>
/// <item>with everything else fixed, step time does not decrease and peak memory does not increase as the
/// offload ratio grows (offload only moves bytes off the GPU, and its transfers can only stall).</item>
/// </list>
/// </summary>
public interface ISearchCostModel
{
    /// <summary>The full evaluation of one valid configuration.</summary>
    CostPoint Evaluate(ModelSpec model, ClusterSpec cluster, ParallelConfig config);

    /// <summary>
    /// A lower bound on the step time of every configuration sharing this one's layout (any ZeRO stage,
    /// recomputation and offload ratio); at least <see cref="ComputeBound"/>. Must be cheap: it orders and prunes
    /// layouts before any evaluation.
    /// </summary>
    double StepTimeLowerBound(ModelSpec model, ClusterSpec cluster, ParallelConfig config);

    /// <summary>
    /// A lower bound on the peak memory of every configuration sharing this one's layout and ZeRO stage
    /// (any recomputation, offload ratio and sync factor): weights, gradients and optimizer states.
    /// Must be cheap: it prunes before any evaluation.
    /// </summary>
    long StaticMemoryLowerBound(ModelSpec model, ClusterSpec cluster, ParallelConfig config);
}
