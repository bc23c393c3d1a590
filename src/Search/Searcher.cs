using System.Diagnostics;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// Branch and bound over the space of <see cref="SpaceEnumerator"/>: layouts are screened on every thread (the ZeRO
/// stages whose weights alone exceed memory pruned, the rest's step time estimated in closed form) and handed, the most
/// promising first, to worker threads; under each layout and ZeRO stage the search evaluates only what could still enter
/// the top K or the Pareto front, using the bounds of <see cref="ISearchCostModel"/>:
/// <code>
/// layout x ZeRO stage   weights alone exceed memory?                         -> prune (WeightsExceedMemory)
///                       time bound with no recomputation loses?              -> prune (LayoutTimeBound)
///   recomputation r     time and memory bounds of r lose?                    -> prune (RecomputeBound)
///                       memory bound of r above the limit, and something fits?          -> prune (RecomputeMemoryBound)
///                       evaluate r at the most offload (the memory floor): does not fit? -> prune (OffloadMemoryBound)
///                       r's time bound with that floor loses?                -> prune (RecomputeBound)
///                       evaluate r at the least offload: loses?              -> prune (RecomputeBound)
///     offload ratio     binary search the smallest ratio that fits (smaller ones cannot fit),
///                       then ascend until the time loses (larger ones are slower)        -> prune (OffloadTimeBound)
/// </code>
/// "Loses" means: slower than the K-th best and dominated on the Pareto front (or beyond its throughput cutoff).
/// Every evaluation is checked against the bounds that let it through; a violation means the cost model broke a
/// property it states, and is counted and reported.
/// </summary>
public sealed class Searcher(ISearchCostModel cost, SearchOptions? options = null)
{
    private readonly SearchOptions _options = options ?? new SearchOptions();

    /// <summary>A layout to walk: its screened step time, the ZeRO stages whose weights fit with their static memory, its
    /// recomputations and offload ratios.</summary>
    private sealed record WorkItem(int Index, Layout Layout, double Screened, IReadOnlyList<(int Stage, long StaticBytes)> Zero,
        IReadOnlyList<RecomputeSpec> Recompute, IReadOnlyList<double> Offload);

    public SearchResult Run(SearchSpace space, SearchProgress? progress = null)
    {
        var clock = Stopwatch.StartNew();
        var enumerator = new SpaceEnumerator(space);
        var layouts = enumerator.Layouts().ToList();
        var board = new Leaderboard(_options.TopK, _options.ParetoMinThroughputFraction);
        var workers = new Worker[Math.Max(1, _options.Threads)];
        for (int w = 0; w < workers.Length; w++) workers[w] = new Worker(cost, space, board, _options.KeepEvaluations);

        // Screening, on every thread: the layouts whose weights fit at some ZeRO stage, with their closed-form step times.
        var screened = new List<WorkItem>[workers.Length];
        int next = -1;
        Parallel.For(0, workers.Length, new ParallelOptions { MaxDegreeOfParallelism = workers.Length }, w =>
        {
            var mine = screened[w] = [];
            int i;
            while ((i = Interlocked.Increment(ref next)) < layouts.Count)
                if (workers[w].Screen(enumerator, i, layouts[i]) is { } item) mine.Add(item);
        });
        // Promising layouts first: a good K-th best and front early prune more later.
        var items = screened.SelectMany(list => list).OrderBy(x => x.Screened).ThenBy(x => x.Index).ToList();
        progress ??= new SearchProgress();
        progress.Total = items.Count;

        next = -1;
        Parallel.For(0, workers.Length, new ParallelOptions { MaxDegreeOfParallelism = workers.Length }, w =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < items.Count)
            {
                var item = items[i];
                workers[w].Layout(item.Layout, item.Zero, item.Recompute, item.Offload);
                progress.Step();
            }
        });
        clock.Stop();

        var pruned = Enum.GetValues<PruneRule>().ToDictionary(rule => rule, rule => workers.Sum(w => w.Pruned[(int)rule]));
        var counts = new SearchCounts(
            workers.Sum(w => w.Enumerated),
            workers.Sum(w => w.Evaluated),
            pruned,
            workers.Sum(w => w.Violations.Count),
            workers.SelectMany(w => w.Violations).Take(5).ToList(),
            layouts.Count(l => enumerator.LeafCount(l) > 0),
            clock.Elapsed);
        var staticMiss = workers.Select(w => w.SmallestStaticMiss).OfType<StaticMemoryMiss>().MinBy(m => m.StaticBytes);
        return new SearchResult(space, _options, board.Top, board.Front, board.NearMisses, staticMiss,
            workers.SelectMany(w => w.Kept).ToList(), counts);
    }

    /// <summary>One thread's walk: its own counters and kept evaluations, the shared leaderboard.</summary>
    private sealed class Worker(ISearchCostModel cost, SearchSpace space, Leaderboard board, bool keep)
    {
        // Bounds are compared with a relative slack: the cost model's float sums may round differently.
        private const double Slack = 1e-9;
        private readonly long _limit = space.MemoryLimitBytes;
        public readonly long[] Pruned = new long[Enum.GetValues<PruneRule>().Length];
        public long Enumerated, Evaluated;
        public readonly List<Evaluated> Kept = [];
        public readonly List<string> Violations = [];
        public StaticMemoryMiss? SmallestStaticMiss;

        private void Prune(PruneRule rule, long configs) => Pruned[(int)rule] += configs;

        /// <summary>Whether a subtree whose step times are at least <paramref name="timeBound"/> loses. A bound can equal the
        /// time it bounds (without a pipeline, the work of its micro-batches is the step) yet come out above it in the last
        /// bit, summed in another order: the slack keeps such a subtree, which may tie with the K-th best, in the search.</summary>
        private bool BoundLoses(double timeBound, long memoryBound, double p) => board.CannotImprove(timeBound * (1 - Slack), memoryBound, p);

        private Evaluated Evaluate(RunDescription config)
        {
            var c = cost.Evaluate(space.Model, space.Cluster, config);
            var e = new Evaluated(config, c, c.PeakMemoryBytes <= _limit);
            Evaluated++;
            if (keep) Kept.Add(e);
            board.Offer(e);
            return e;
        }

        private void Expect(bool holds, string property, RunDescription config)
        {
            if (!holds) Violations.Add($"{property}: {PaperNotation.Short(config)}");
        }

        /// <summary>The layout's ZeRO stages whose weights, gradients and optimizer states fit (the others pruned), and its
        /// screened step time at its most frugal memory (largest ZeRO stage and offload ratio, likelier to fit); null when
        /// it holds no configuration or none of its stages fits.</summary>
        public WorkItem? Screen(SpaceEnumerator enumerator, int index, Layout layout)
        {
            var zeroStages = enumerator.ZeroOptions(layout);
            var recompute = enumerator.RecomputeOptions(layout);
            var offload = enumerator.OffloadOptions(layout);
            long perZero = (long)recompute.Count * offload.Count;
            if (perZero == 0 || zeroStages.Count == 0) return null;
            Enumerated += zeroStages.Count * perZero;
            var fitting = new List<(int, long)>(zeroStages.Count);
            foreach (int zero in zeroStages)
            {
                var probe = layout.ToConfig(space.GlobalBatch, zero, RecomputeSpec.None, offload[0], space.Constraints.Implementation);
                long staticBytes = cost.StaticMemoryLowerBound(space.Model, space.Cluster, probe);
                if (staticBytes <= _limit)
                {
                    fitting.Add((zero, staticBytes));
                    continue;
                }
                Prune(PruneRule.WeightsExceedMemory, perZero);
                if (SmallestStaticMiss is null || staticBytes < SmallestStaticMiss.StaticBytes)
                    SmallestStaticMiss = new StaticMemoryMiss(probe, staticBytes);
            }
            if (fitting.Count == 0) return null;
            var frugal = layout.ToConfig(space.GlobalBatch, zeroStages[^1], RecomputeSpec.None, offload[^1], space.Constraints.Implementation);
            return new WorkItem(index, layout, cost.Screen(space.Model, space.Cluster, frugal), fitting, recompute, offload);
        }

        public void Layout(Layout layout, IReadOnlyList<(int Stage, long StaticBytes)> zeroStages, IReadOnlyList<RecomputeSpec> recompute,
            IReadOnlyList<double> offload)
        {
            long perZero = (long)recompute.Count * offload.Count;
            double p = layout.SyncFactor;
            foreach (var (zero, staticBytes) in zeroStages)
            {
                var probe = layout.ToConfig(space.GlobalBatch, zero, RecomputeSpec.None, offload[0], space.Constraints.Implementation);
                // No recomputation bounds the time of every recomputation.
                var layoutBounds = cost.Bounds(space.Model, space.Cluster, probe);
                if (BoundLoses(layoutBounds.StepTimeSeconds, staticBytes, p))
                {
                    Prune(PruneRule.LayoutTimeBound, perZero);
                    continue;
                }
                foreach (var r in recompute)
                {
                    var bounds = r == RecomputeSpec.None ? layoutBounds
                        : cost.Bounds(space.Model, space.Cluster, layout.ToConfig(space.GlobalBatch, zero, r, offload[0], space.Constraints.Implementation));
                    var floor = bounds with
                    {
                        StepTimeSeconds = Math.Max(bounds.StepTimeSeconds, layoutBounds.StepTimeSeconds),
                        PeakMemoryBytes = Math.Max(bounds.PeakMemoryBytes, staticBytes),
                    };
                    if (BoundLoses(floor.StepTimeSeconds, floor.PeakMemoryBytes, p))
                    {
                        Prune(PruneRule.RecomputeBound, offload.Count);
                        continue;
                    }
                    if (floor.PeakMemoryBytes > _limit && board.AnyFits)
                    {
                        Prune(PruneRule.RecomputeMemoryBound, offload.Count);
                        continue;
                    }
                    Sweep(layout, zero, r, offload, floor);
                }
            }
        }

        /// <summary>The offload ratios of one (layout, ZeRO stage, recomputation), ascending.</summary>
        private void Sweep(Layout layout, int zero, RecomputeSpec r, IReadOnlyList<double> offload, CostBounds bounds)
        {
            int n = offload.Count;
            double p = layout.SyncFactor;
            var at = new Evaluated?[n];
            Evaluated Eval(int i)
            {
                if (at[i] is Evaluated known) return known;
                var e = at[i] = Evaluate(layout.ToConfig(space.GlobalBatch, zero, r, offload[i], space.Constraints.Implementation));
                Expect(e.Cost.StepTimeSeconds >= bounds.StepTimeSeconds * (1 - Slack), "step time below its bound", e.Config);
                Expect(e.Cost.PeakMemoryBytes >= bounds.PeakMemoryBytes, "peak memory below its bound", e.Config);
                return e;
            }
            long Unevaluated(int from, int to) // in [from, to)
            {
                long c = 0;
                for (int i = from; i < to; i++) if (at[i] is null) c++;
                return c;
            }

            if (n == 1)
            {
                Eval(0);
                return;
            }
            // The most offload first: its memory is the sweep's floor, exact where the bound is loose.
            var last = Eval(n - 1);
            long floor = last.Cost.PeakMemoryBytes;
            if (!last.Fits)
            {
                Prune(PruneRule.OffloadMemoryBound, n - 1);
                return;
            }
            if (BoundLoses(bounds.StepTimeSeconds, floor, p))
            {
                Prune(PruneRule.RecomputeBound, n - 1);
                return;
            }
            var first = Eval(0);
            Expect(last.Cost.StepTimeSeconds >= first.Cost.StepTimeSeconds * (1 - Slack), "more offload faster", last.Config);
            Expect(floor <= first.Cost.PeakMemoryBytes, "more offload uses more memory", last.Config);
            if (board.CannotImprove(first.Cost.StepTimeSeconds, floor, p))
            {
                Prune(PruneRule.RecomputeBound, n - 2);
                return;
            }
            // Smallest fitting ratio: memory does not grow with the ratio, so binary search; smaller ratios cannot fit.
            int lo = first.Fits ? -1 : 0, hi = first.Fits ? 0 : n - 1;
            while (hi - lo > 1)
            {
                int mid = (lo + hi) / 2;
                if (Eval(mid).Fits) hi = mid; else lo = mid;
            }
            Prune(PruneRule.OffloadMemoryBound, Unevaluated(1, hi));
            // Ascend: once a ratio loses, every larger one (slower, at least the floor's memory) loses too.
            var previous = Eval(hi);
            for (int i = hi; i < n - 1; i++)
            {
                var e = Eval(i);
                Expect(e.Cost.StepTimeSeconds >= previous.Cost.StepTimeSeconds * (1 - Slack), "more offload faster", e.Config);
                Expect(e.Cost.PeakMemoryBytes >= floor, "more offload uses more memory", e.Config);
                previous = e;
                if (board.CannotImprove(e.Cost.StepTimeSeconds, floor, p))
                {
                    Prune(PruneRule.OffloadTimeBound, Unevaluated(i + 1, n - 1));
                    return;
                }
            }
        }
    }
}
