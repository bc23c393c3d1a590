namespace Harness.Search;

/// <summary>
/// The Pareto front over three goals: shorter step time (higher throughput), lower peak memory (more headroom)
/// and higher sync factor p (closer to the unmodified model). A point is on the front when no other point is at
/// least as good in all three and strictly better in one. Kept as one staircase per p (time ascending, memory
/// strictly descending), so "is this (time, memory, p) dominated?" is a binary search per p value.
/// Not thread-safe: <see cref="Leaderboard"/> guards it.
/// </summary>
public sealed class ParetoFront
{
    private readonly SortedDictionary<double, List<Evaluated>> _stairs = new();

    private static double T(Evaluated e) => e.Cost.StepTimeSeconds;
    private static long M(Evaluated e) => e.Cost.PeakMemoryBytes;

    /// <summary>
    /// True when some point strictly dominates every configuration whose time is at least <paramref name="time"/>,
    /// whose memory is at least <paramref name="memory"/> and whose p is at most <paramref name="p"/>.
    /// </summary>
    public bool Dominates(double time, long memory, double p)
    {
        foreach (var (q, stair) in _stairs)
        {
            if (q < p) continue;
            // The last point with time <= the bound has the least memory among those.
            int i = LastAtOrBefore(stair, time);
            if (i < 0) continue;
            var best = stair[i];
            if (M(best) <= memory && (T(best) < time || M(best) < memory || q > p)) return true;
        }
        return false;
    }

    private static int LastAtOrBefore(List<Evaluated> stair, double time)
    {
        int lo = 0, hi = stair.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (T(stair[mid]) <= time) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found;
    }

    /// <summary>Adds a fitting point unless its own p's staircase already strictly dominates it; drops what it dominates there.</summary>
    public void Add(Evaluated e)
    {
        double p = e.Config.SyncFactor;
        if (!_stairs.TryGetValue(p, out var stair)) _stairs[p] = stair = [];
        int i = LastAtOrBefore(stair, T(e));
        if (i >= 0 && StrictlyDominates(stair[i], e)) return;
        stair.RemoveAll(q => StrictlyDominates(e, q));
        stair.Add(e);
        stair.Sort((a, b) => T(a) != T(b) ? T(a).CompareTo(T(b)) : M(b).CompareTo(M(a)));
    }

    /// <summary>The front across every p: points of all staircases that no point of a p at least as high dominates.</summary>
    public IReadOnlyList<Evaluated> Points()
    {
        var all = _stairs.Values.SelectMany(s => s).ToList();
        return all.Where(e => !all.Any(q => StrictlyDominates(q, e))).OrderBy(e => e, Comparer<Evaluated>.Create(Evaluated.Rank)).ToList();
    }

    /// <summary>q is at least as good as e in time, memory and p, and better in one.</summary>
    public static bool StrictlyDominates(Evaluated q, Evaluated e) =>
        T(q) <= T(e) && M(q) <= M(e) && q.Config.SyncFactor >= e.Config.SyncFactor
        && (T(q) < T(e) || M(q) < M(e) || q.Config.SyncFactor > e.Config.SyncFactor);
}
