using Harness.Search;
using Harness.Simulator.Specs;
using static Harness.Tests.Search.SearchTestSpaces;

namespace Harness.Tests.Search;

public class SearcherTests
{
    private static readonly Comparer<Evaluated> ByRank = Comparer<Evaluated>.Create(Evaluated.Rank);

    private static List<Evaluated> BruteFront(List<Evaluated> all, double minFraction)
    {
        var fits = all.Where(e => e.Fits).ToList();
        double best = fits.Min(e => e.Cost.StepTimeSeconds);
        var inCut = fits.Where(e => minFraction == 0 || e.Cost.StepTimeSeconds * minFraction <= best).ToList();
        return inCut.Where(e => !inCut.Any(q => ParetoFront.StrictlyDominates(q, e))).Order(ByRank).ToList();
    }

    public static TheoryData<string, int, int, long, int, int> Cases => new()
    {
        // model, world, global batch, memory limit (MiB; 0 = the GPU's), top K, threads
        { "tiny-gpt", 8, 8, 0, 7, 1 },
        { "tiny-gpt", 8, 8, 0, 7, 2 },
        { "tiny-llama", 12, 12, 0, 1, 2 },
        { "tiny-llama", 12, 12, 12, 40, 2 },
        { "tiny-gpt", 16, 16, 25, 7, 2 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void FindsTheBruteForceTopKAndParetoFront(string model, int world, int gbs, long limitMiB, int k, int threads)
    {
        var c = new SearchConstraints { OffloadStep = 0.1, SyncFactors = [1.0, 0.5], MemoryLimitBytes = limitMiB > 0 ? limitMiB << 20 : null };
        var space = Space(model == "tiny-gpt" ? TinyGpt : TinyLlama, world, gbs, c);
        var cost = new ToyCostModel();
        var brute = BruteForce(space, cost);
        Assert.Contains(brute, e => e.Fits);
        Assert.Contains(brute, e => !e.Fits);

        var result = new Searcher(cost, new SearchOptions { TopK = k, Threads = threads, ParetoMinThroughputFraction = 0 }).Run(space);
        AssertSameAsBruteForce(brute, result, k);
        // It did not evaluate everything: the bounds pruned.
        Assert.True(result.Counts.Evaluated < brute.Count / 2, $"evaluated {result.Counts.Evaluated} of {brute.Count}");
    }

    private static void AssertSameAsBruteForce(List<Evaluated> brute, SearchResult result, int k)
    {

        Assert.Equal(brute.Count, result.Counts.Enumerated);
        Assert.Equal(result.Counts.Enumerated, result.Counts.Evaluated + result.Counts.PrunedTotal);
        Assert.Equal(result.Counts.Evaluated, result.Evaluations.Count);
        Assert.Equal(0, result.Counts.BoundViolations);
        var expectedTop = brute.Where(e => e.Fits).Order(ByRank).Take(k).Select(e => e.Config).ToList();
        Assert.Equal(expectedTop, result.Top.Select(e => e.Config).ToList());
        Assert.Equal(BruteFront(brute, 0).Select(e => e.Config).ToList(), result.ParetoFront.Select(e => e.Config).ToList());
        // The fastest config at each sync factor p is among the evaluations (the throughput-vs-p plot is exact).
        foreach (var atP in brute.Where(e => e.Fits).GroupBy(e => e.Config.SyncFactor))
            Assert.Equal(atP.Min(e => e.Cost.StepTimeSeconds),
                result.Evaluations.Where(e => e.Fits && e.Config.SyncFactor == atP.Key).Min(e => e.Cost.StepTimeSeconds));
    }

    [Fact]
    public void OffloadSweepsAreExactWhereMemoryBites()
    {
        // Long sequences make activations dominate; the limit sits in the middle of what offloadable configs need
        // at no offload, so the sweeps must binary-search the smallest fitting ratio and stop when time loses.
        var model = TinyLlama with { SeqLength = 960 };
        var probe = Space(model, 12, 12, new SearchConstraints { OffloadStep = 0.05 });
        var cost = new ToyCostModel();
        var atNoOffload = BruteForce(probe, cost)
            .Where(e => e.Config.PipelineParallel >= 3 && e.Config.LayersPerVirtualStage is not null && e.Config.OffloadRatio == 0)
            .Select(e => e.Cost.PeakMemoryBytes).Order().ToList();
        long limit = atNoOffload[atNoOffload.Count / 2];
        var space = probe with { Constraints = probe.Constraints with { MemoryLimitBytes = limit } };
        var brute = BruteForce(space, cost);
        var result = new Searcher(cost, new SearchOptions { TopK = 10, ParetoMinThroughputFraction = 0 }).Run(space);
        AssertSameAsBruteForce(brute, result, 10);
        Assert.True(result.Counts.Pruned[PruneRule.OffloadMemoryBound] > 0);
        Assert.True(result.Counts.Pruned[PruneRule.OffloadTimeBound] > 0);
        Assert.Contains(result.ParetoFront, e => e.Config.OffloadRatio > 0);
    }

    [Fact]
    public void FastestAtEachSyncFactorIsExactEvenWhenDominated()
    {
        // In the toy model p 0.95 cannot use sequence parallelism, which cuts TP traffic by 10% and activations by
        // t/sqrt(t) at p 1: its configs are dominated (slower, bigger, lower p), yet its fastest must be found.
        var space = Space(TinyGpt, 16, 16, new SearchConstraints { OffloadStep = 0.25, SyncFactors = [1.0, 0.95], TensorParallel = [4, 8] });
        var cost = new ToyCostModel();
        var brute = BruteForce(space, cost);
        var fits = brute.Where(e => e.Fits).ToList();
        var fastestAtLowP = fits.Where(e => e.Config.SyncFactor < 1).MinBy(e => e.Cost.StepTimeSeconds)!;
        Assert.Contains(fits, q => ParetoFront.StrictlyDominates(q, fastestAtLowP));
        var result = new Searcher(cost, new SearchOptions { ParetoMinThroughputFraction = 0 }).Run(space);
        AssertSameAsBruteForce(brute, result, 10);
    }

    [Fact]
    public void ParetoCutoffKeepsTheFrontWithinTheFractionExactly()
    {
        var space = Space(TinyLlama, 12, 12, new SearchConstraints { OffloadStep = 0.1 });
        var cost = new ToyCostModel();
        var brute = BruteForce(space, cost);
        var result = new Searcher(cost, new SearchOptions { ParetoMinThroughputFraction = 0.8 }).Run(space);
        var expected = BruteFront(brute, 0.8);
        Assert.True(expected.Count >= 3);
        Assert.Equal(expected.Select(e => e.Config).ToList(), result.ParetoFront.Select(e => e.Config).ToList());
    }

    [Fact]
    public void EveryReturnedConfigValidatesAndFits()
    {
        var space = Space(TinyLlama, 12, 12, new SearchConstraints { OffloadStep = 0.1, MemoryLimitBytes = 12L << 20 });
        var result = new Searcher(new ToyCostModel(), new SearchOptions { TopK = 20 }).Run(space);
        Assert.Equal(20, result.Top.Count);
        Assert.All(result.Top.Concat(result.ParetoFront), e =>
        {
            Assert.Empty(e.Config.Validate(space.Model, space.Cluster.WorldSize));
            Assert.True(e.Cost.PeakMemoryBytes <= 12L << 20);
        });
        Assert.All(result.Evaluations, e => Assert.Empty(e.Config.Validate(space.Model, space.Cluster.WorldSize)));
    }

    [Fact]
    public void TopOneIsTheFastestFittingEvaluation()
    {
        var space = Space(TinyGpt, 16, 16);
        var result = new Searcher(new ToyCostModel()).Run(space);
        double fastest = result.Evaluations.Where(e => e.Fits).Max(e => e.Cost.TokensPerSecondPerGpu);
        Assert.Equal(fastest, result.Best!.Cost.TokensPerSecondPerGpu);
    }

    [Fact]
    public void ConstraintsAreHonouredByEveryEvaluation()
    {
        var c = new SearchConstraints { TensorParallel = [2, 4], Recompute = [RecomputeKind.None, RecomputeKind.Full], OffloadRatios = [0] };
        var result = new Searcher(new ToyCostModel()).Run(Space(TinyGpt, 16, 16, c));
        Assert.NotEmpty(result.Evaluations);
        Assert.All(result.Evaluations, e =>
        {
            Assert.Contains(e.Config.TensorParallel, new[] { 2, 4 });
            Assert.Contains(e.Config.RecomputeOrNone.Granularity, new[] { RecomputeGranularity.None, RecomputeGranularity.Full });
            Assert.Equal(0, e.Config.OffloadRatio);
        });
    }

    [Fact]
    public void NothingFitsLeavesNoTopAndNamesTheNearMisses()
    {
        var space = Space(TinyGpt, 8, 8, new SearchConstraints { MemoryLimitBytes = 1L << 20, OffloadStep = 0.25 });
        var result = new Searcher(new ToyCostModel()).Run(space);
        Assert.Empty(result.Top);
        Assert.Empty(result.ParetoFront);
        Assert.NotNull(result.SmallestStaticMiss);
        // The smallest static footprint is ZeRO-3 over all 8 ranks: 4 layers of params x 18 B / 8.
        Assert.Equal((long)(TinyGpt.ParametersPerLayer * 4 * 18.0 / 8), result.SmallestStaticMiss!.StaticBytes);
    }
}
