namespace Harness.Search;

/// <summary>
/// What the search keeps while it runs, shared by its worker threads: the K best fitting configurations, the
/// Pareto front, and the configurations closest to fitting (reported when nothing fits). It answers the pruning
/// question "could anything at least this slow and this big still matter?".
/// </summary>
public sealed class Leaderboard
{
    private readonly object _gate = new();
    private readonly int _k;
    private readonly double _paretoMinThroughputFraction;
    private readonly List<Evaluated> _top = [];
    private readonly List<Evaluated> _nearMisses = [];
    private readonly ParetoFront _front = new();
    // The K-th best step time; +inf until K fitting configs are known. Read without the lock (a stale value is
    // only larger, which prunes less, never wrongly).
    private double _kthTime = double.PositiveInfinity;
    private double _bestTime = double.PositiveInfinity;
    // The best step time at each sync factor p, kept exact so "what each step of p buys" is exact too.
    private readonly Dictionary<double, double> _bestTimeBySyncFactor = [];

    /// <param name="paretoMinThroughputFraction">The front holds configs with at least this fraction of the best
    /// throughput (0: the whole front).</param>
    public Leaderboard(int k, double paretoMinThroughputFraction = 0)
    {
        _k = k;
        _paretoMinThroughputFraction = paretoMinThroughputFraction;
    }

    /// <summary>Records one evaluated configuration.</summary>
    public void Offer(Evaluated e)
    {
        lock (_gate)
        {
            if (!e.Fits)
            {
                Insert(_nearMisses, e, (a, b) => a.Cost.PeakMemoryBytes.CompareTo(b.Cost.PeakMemoryBytes));
                return;
            }
            _bestTime = Math.Min(_bestTime, e.Cost.StepTimeSeconds);
            double p = e.Config.SyncFactor;
            _bestTimeBySyncFactor[p] = Math.Min(e.Cost.StepTimeSeconds, _bestTimeBySyncFactor.GetValueOrDefault(p, double.PositiveInfinity));
            if (_top.Count < _k || Evaluated.Rank(e, _top[^1]) < 0)
            {
                Insert(_top, e, Evaluated.Rank);
                if (_top.Count == _k) Volatile.Write(ref _kthTime, _top[^1].Cost.StepTimeSeconds);
            }
            if (!BeyondParetoCutoff(e.Cost.StepTimeSeconds)) _front.Add(e);
        }
    }

    private void Insert(List<Evaluated> list, Evaluated e, Comparison<Evaluated> order)
    {
        int i = list.BinarySearch(e, Comparer<Evaluated>.Create(order));
        list.Insert(i < 0 ? ~i : i, e);
        if (list.Count > _k) list.RemoveAt(list.Count - 1);
    }

    private bool BeyondParetoCutoff(double time) =>
        _paretoMinThroughputFraction > 0 && time * _paretoMinThroughputFraction > _bestTime;

    /// <summary>
    /// True when no configuration with step time at least <paramref name="time"/>, peak memory at least
    /// <paramref name="memory"/> and sync factor <paramref name="p"/> can enter the top K, the Pareto front or
    /// be the fastest at its p.
    /// Strict comparisons: ties are kept, so the answer does not depend on the order threads finish in.
    /// </summary>
    public bool CannotImprove(double time, long memory, double p)
    {
        if (!(time > Volatile.Read(ref _kthTime))) return false;
        lock (_gate)
            return time > _bestTimeBySyncFactor.GetValueOrDefault(p, double.PositiveInfinity)
                && (BeyondParetoCutoff(time) || _front.Dominates(time, memory, p));
    }

    /// <summary>Whether a fitting configuration has been offered (then nothing-fits' near misses are moot).</summary>
    public bool AnyFits => Volatile.Read(ref _bestTime) < double.PositiveInfinity;

    public IReadOnlyList<Evaluated> Top { get { lock (_gate) return _top.ToList(); } }

    public IReadOnlyList<Evaluated> NearMisses { get { lock (_gate) return _nearMisses.ToList(); } }

    /// <summary>The Pareto front (throughput, memory headroom, p) among fitting configs within the cutoff, best first.</summary>
    public IReadOnlyList<Evaluated> Front
    {
        get
        {
            lock (_gate) return _front.Points().Where(e => !BeyondParetoCutoff(e.Cost.StepTimeSeconds)).ToList();
        }
    }
}
