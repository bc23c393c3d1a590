using Harness.Megatron;
using Harness.Search;
using Harness.Simulator.Specs;
using static Harness.Tests.Search.SearchTestSpaces;

namespace Harness.Tests.Search;

public class SpaceEnumeratorTests
{
    private static string Key(RunDescription c) => $"{c.DataParallel} {string.Join(' ', RunDescriptionFlags.Format(c))} z{c.ZeroStage} r{c.RecomputeOrNone}";

    public static TheoryData<string, int, int> Spaces => new()
    {
        { "tiny-gpt", 8, 8 },
        { "tiny-llama", 12, 6 },
    };

    private static ModelSpec Model(string name) => name == "tiny-gpt" ? TinyGpt : TinyLlama;

    [Theory]
    [MemberData(nameof(Spaces))]
    public void EnumeratesExactlyTheConfigsValidateAccepts(string model, int world, int gbs)
    {
        var space = Space(Model(model), world, gbs, new SearchConstraints { OffloadStep = 0.5 });
        var expected = ValidByValidate(space).Select(Key).Order().ToList();
        var enumerated = new SpaceEnumerator(space).All().Select(Key).ToList();
        Assert.Equal(enumerated.Count, enumerated.Distinct().Count());
        Assert.Equal(expected, enumerated.Order().ToList());
        Assert.True(expected.Count > 1000, $"only {expected.Count} configs: the space is too small to test anything");
    }

    [Fact]
    public void UnderMegatronFsdpEveryStageRunsWithPipelinesAndVersionTwoOnlyUnsplit()
    {
        var v1 = Space(TinyLlama, 12, 6, new SearchConstraints { OffloadStep = 0.5, Implementation = new RunDescription(Fsdp: new MegatronFsdp()) });
        var enumerated = new SpaceEnumerator(v1).All().ToList();
        Assert.Equal(ValidByValidate(v1).Select(Key).Order(), enumerated.Select(Key).Order());
        Assert.Contains(enumerated, c => c.PipelineParallel > 1 && c.ZeroStage == 3);
        Assert.All(enumerated, c => Assert.Equal(0, c.OffloadRatio));
        var v2 = Space(TinyGpt, 8, 8, new SearchConstraints
        {
            OffloadStep = 0.5, Implementation = new RunDescription(Fsdp: new MegatronFsdp(Version: 2), GradientAccumulationFusion: false),
        });
        var unsplit = new SpaceEnumerator(v2).All().ToList();
        Assert.NotEmpty(unsplit);
        Assert.Equal(ValidByValidate(v2).Select(Key).Order(), unsplit.Select(Key).Order());
        Assert.All(unsplit, c => Assert.Equal((1, 1, 1, 3), (c.TensorParallel, c.PipelineParallel, c.ContextParallel, c.ZeroStage)));
    }

    [Fact]
    public void LeafCountsAddUpToTheEnumeration()
    {
        var space = Space(TinyLlama, 12, 6);
        var e = new SpaceEnumerator(space);
        Assert.Equal(e.All().LongCount(), e.Layouts().Sum(e.LeafCount));
    }

    [Fact]
    public void ConstraintsNarrowEveryDimension()
    {
        var c = new SearchConstraints
        {
            TensorParallel = [2], PipelineParallel = [2, 4], ContextParallel = [1], MicroBatch = [1], SequenceParallel = [true],
            Recompute = [RecomputeKind.Full], RecomputeMethod = [RecomputeMethod.Block], ZeroStage = [1],
            LayersPerVirtualStage = [0], OffloadRatios = [0], TensorParallelWithinNode = true,
        };
        var all = new SpaceEnumerator(Space(TinyGpt, 8, 8, c)).All().ToList();
        Assert.NotEmpty(all);
        Assert.All(all, x =>
        {
            Assert.Equal(2, x.TensorParallel);
            Assert.Contains(x.PipelineParallel, new[] { 2, 4 });
            Assert.Equal(1, x.ContextParallel);
            Assert.Equal(1, x.MicroBatch);
            Assert.True(x.SequenceParallel);
            Assert.Equal(RecomputeGranularity.Full, x.RecomputeOrNone.Granularity);
            Assert.Equal(RecomputeMethod.Block, x.RecomputeOrNone.Method);
            Assert.Equal(1, x.ZeroStage);
            Assert.Null(x.LayersPerVirtualStage);
            Assert.Equal(0, x.OffloadRatio);
        });
        // Block num-layers 1..L/p: pp 2 gives 2 layers per stage, pp 4 gives 1; dp = 8/(2·pp) = 2 or 1.
        Assert.Equal(2 + 1, all.Count);
    }

    [Fact]
    public void ContextParallelExchangesAreSearchedOnlyWhereThereIsOneAndUlyssesOnlyWhereHeadsSplit()
    {
        // Tiny Llama: 8 heads, 2 query groups. Ulysses needs the groups of a tensor-parallel rank to split c ways: t 1, c 2 only.
        var all = new SpaceEnumerator(Space(TinyLlama, 12, 6)).All().ToList();
        Assert.All(all.Where(x => x.ContextParallel == 1), x => Assert.Equal(ContextParallelCommType.P2p, x.ContextParallelComm));
        var withCp = all.Where(x => x.ContextParallel > 1).ToList();
        foreach (var comm in new[] { ContextParallelCommType.P2p, ContextParallelCommType.AllGather })
            Assert.Contains(withCp, x => x.ContextParallelComm == comm);
        Assert.Equal([(1, 2)], withCp.Where(x => x.ContextParallelComm == ContextParallelCommType.A2a)
            .Select(x => (x.TensorParallel, x.ContextParallel)).Distinct());
        // a2a+p2p: an all-to-all level of 2 (t 1) and a ring of at least 2 more: c 4, 6 and 12 (s 96 splits 2c ways).
        Assert.Equal([(1, 4, 2), (1, 6, 2), (1, 12, 2)], withCp.Where(x => x.ContextParallelComm == ContextParallelCommType.A2aP2p)
            .Select(x => (x.TensorParallel, x.ContextParallel, x.HierarchicalAllToAllSize ?? 0)).Distinct().Order());
        // Asked for Ulysses alone: the context-parallel layouts hold only it; those without context parallelism stay.
        var only = new SpaceEnumerator(Space(TinyLlama, 12, 6, new SearchConstraints { OffloadStep = 0.25, ContextParallelComm = [ContextParallelCommType.A2a] })).All().ToList();
        Assert.All(only.Where(x => x.ContextParallel > 1), x => Assert.Equal(ContextParallelCommType.A2a, x.ContextParallelComm));
        Assert.Equal(all.Count(x => x.ContextParallel == 1), only.Count(x => x.ContextParallel == 1));
    }

    [Fact]
    public void CountedEndsNarrowToInterleavedSplitsThatCountThem()
    {
        // 6 layers: with the embedding and the loss counted, 8 split over 2 or 4 stages, interleaved.
        var all = new SpaceEnumerator(Space(TinyLlama, 12, 6, new SearchConstraints { AccountForLossInPipelineSplit = true, OffloadRatios = [0] })).All().ToList();
        Assert.NotEmpty(all);
        Assert.All(all, x =>
        {
            Assert.True(x.AccountForEmbeddingInPipelineSplit && x.AccountForLossInPipelineSplit);
            Assert.NotNull(x.LayersPerVirtualStage);
            Assert.Contains(x.PipelineParallel, new[] { 2, 4 });
        });
    }

    [Fact]
    public void TensorParallelWithinNodeKeepsTpAtMostTheNode()
    {
        var c = new SearchConstraints { TensorParallelWithinNode = true, OffloadRatios = [0] };
        var tps = new SpaceEnumerator(Space(TinyGpt, 8, 8, c, gpusPerNode: 2)).All().Select(x => x.TensorParallel).Distinct().Order();
        Assert.Equal(new[] { 1, 2 }, tps);
    }

    [Fact]
    public void OffloadGridHasTheStepAndBothEnds()
    {
        var grid = new SearchConstraints().OffloadGrid();
        Assert.Equal(21, grid.Count);
        Assert.Equal(0, grid[0]);
        Assert.Equal(0.05, grid[1]);
        Assert.Equal(0.65, grid[13]);
        Assert.Equal(1, grid[^1]);
    }

    [Fact]
    public void ZeroStagesTwoAndThreeOnlyWithoutPipelineParallelism()
    {
        var e = new SpaceEnumerator(Space(TinyLlama, 12, 6));
        var all = e.All().ToList();
        Assert.DoesNotContain(all, c => c.ZeroStage >= 2 && c.PipelineParallel > 1);
        Assert.Contains(all, c => c.ZeroStage == 3 && c.PipelineParallel == 1);
        Assert.Contains(all, c => c.ZeroStage == 1 && c.PipelineParallel > 1);
        // Asked for stage 2 alone, the pipelined layouts hold nothing.
        var only2 = new SpaceEnumerator(Space(TinyLlama, 12, 6, new SearchConstraints { ZeroStage = [2] }));
        Assert.All(only2.Layouts(), l => Assert.Equal(l.PipelineParallel == 1, only2.LeafCount(l) > 0));
    }

    [Fact]
    public void OffloadOnlyWithInterleavingAndThreeStages()
    {
        var all = new SpaceEnumerator(Space(TinyLlama, 12, 6)).All().Where(c => c.OffloadRatio > 0).ToList();
        Assert.NotEmpty(all);
        Assert.All(all, c => { Assert.NotNull(c.LayersPerVirtualStage); Assert.True(c.PipelineParallel >= 3); });
    }
}
