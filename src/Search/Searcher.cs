using System.Diagnostics;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// Branch and bound over the space of <see cref="SpaceEnumerator"/>: layouts (screened: the most promising first)
/// are handed to worker threads; under each layout and ZeRO stage the search evaluates only what could still enter
/// the top K or the Pareto front, using the bounds of <see cref="ISearchCostModel"/>:
/// <code>
/// layout x ZeRO stage   weights alone exceed memory?                         -> prune (WeightsExceedMemory)
///                       time bound with no recomputation loses?              -> prune (LayoutTimeBound)
///   recomputation r     time and memory bounds of r lose?                    -> prune (RecomputeBound)
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

    private sealed record WorkItem(Layout Layout, double Screened, IReadOnlyList<int> Zero, IReadOnlyList<RecomputeSpec> Recompute,
        IReadOnlyList<double> Offload);

    public SearchResult Run(SearchSpace space, SearchProgress? progress = null)
    {
        var clock = Stopwatch.StartNew();
        var enumerator = new SpaceEnumerator(space);
        var items = new List<WorkItem>();
        long enumerated = 0;
        foreach (var layout in enumerator.Layouts())
        {
            var z = enumerator.ZeroOptions(layout);
            var r = enumerator.RecomputeOptions(layout);
            var a = enumerator.OffloadOptions(layout);
            long leaves = (long)z.Count * r.Count * a.Count;
            if (leaves == 0) continue;
            enumerated += leaves;
            // Screen the layout at its most frugal memory (largest ZeRO stage and offload ratio), which is likelier to fit.
            var probe = layout.ToConfig(space.GlobalBatch, z[^1], RecomputeSpec.None, a[^1], space.Constraints.Implementation);
            items.Add(new WorkItem(layout, cost.Screen(space.Model, space.Cluster, probe), z, r, a));
        }
        // Promising layouts first: a good K-th best and front early prune more later.
        items.Sort((x, y) => x.Screened.CompareTo(y.Screened));
        progress ??= new SearchProgress();
        progress.Total = items.Count;

        var board = new Leaderboard(_options.TopK, _options.ParetoMinThroughputFraction);
        var workers = new Worker[Math.Max(1, _options.Threads)];
        int next = -1;
        Parallel.For(0, workers.Length, new ParallelOptions { MaxDegreeOfParallelism = workers.Length }, w =>
        {
            var worker = workers[w] = new Worker(cost, space, board, _options.KeepEvaluations);
            int i;
            while ((i = Interlocked.Increment(ref next)) < items.Count)
            {
                var item = items[i];
                worker.Layout(item.Layout, item.Zero, item.Recompute, item.Offload);
                progress.Step();
            }
        });
        clock.Stop();

        var pruned = Enum.GetValues<PruneRule>().ToDictionary(rule => rule, rule => workers.Sum(w => w.Pruned[(int)rule]));
        var counts = new SearchCounts(
            enumerated,
            workers.Sum(w => w.Evaluated),
            pruned,
            workers.Sum(w => w.Violations.Count),
            workers.SelectMany(w => w.Violations).Take(5).ToList(),
            items.Count,
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
        public long Evaluated;
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

        public void Layout(Layout layout, IReadOnlyList<int> zeroStages, IReadOnlyList<RecomputeSpec> recompute, IReadOnlyList<double> offload)
        {
            long perZero = (long)recompute.Count * offload.Count;
            double p = layout.SyncFactor;
            foreach (int zero in zeroStages)
            {
                var probe = layout.ToConfig(space.GlobalBatch, zero, RecomputeSpec.None, offload[0], space.Constraints.Implementation);
                long staticBytes = cost.StaticMemoryLowerBound(space.Model, space.Cluster, probe);
                if (staticBytes > _limit)
                {
                    Prune(PruneRule.WeightsExceedMemory, perZero);
                    if (SmallestStaticMiss is null || staticBytes < SmallestStaticMiss.StaticBytes)
                        SmallestStaticMiss = new StaticMemoryMiss(probe, staticBytes);
                    continue;
                }
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
