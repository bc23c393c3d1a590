using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>One fully evaluated configuration and whether it fits the memory limit.</summary>
public sealed record Evaluated(RunDescription Config, CostPoint Cost, bool Fits)
{
    /// <summary>
    /// The search's ranking: shorter step time first (same world size and batch, so higher tokens/s/GPU),
    /// then lower peak memory, then the Megatron arguments as text, so ties resolve the same way on every run.
    /// </summary>
    public static int Rank(Evaluated a, Evaluated b)
    {
        int c = a.Cost.StepTimeSeconds.CompareTo(b.Cost.StepTimeSeconds);
        if (c != 0) return c;
        c = a.Cost.PeakMemoryBytes.CompareTo(b.Cost.PeakMemoryBytes);
        return c != 0 ? c : string.CompareOrdinal(string.Join(' ', RunDescriptionFlags.Format(a.Config)), string.Join(' ', RunDescriptionFlags.Format(b.Config)));
    }
}
