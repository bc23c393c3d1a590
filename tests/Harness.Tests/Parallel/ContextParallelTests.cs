using Harness.Executor.Distributed;
using Harness.Executor.Training;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>Context parallelism under grouped-query attention: the groups' keys and values travel, not expanded ones, and the result is the serial run's.</summary>
public class ContextParallelTests
{
    /// <summary>Four query heads sharing two key/value groups.</summary>
    private static ModelSpec Gqa() => Reference.Llama() with { NumQueryGroups = 2 };

    private static RunDescription Config(int cp, int tp = 1) =>
        new(ContextParallel: cp, TensorParallel: tp, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32, ContextParallelComm: ContextParallelCommType.AllGather);

    /// <summary>Eight query heads sharing four key/value groups (head dim 4): Ulysses splits both over four context ranks, or
    /// over two on each of two tensor-parallel ranks.</summary>
    private static ModelSpec Gqa8() => Reference.Llama() with { NumAttentionHeads = 8, NumQueryGroups = 4 };

    private const ContextParallelCommType Ring = ContextParallelCommType.P2p, Ulysses = ContextParallelCommType.A2a;

    [Fact]
    public void GroupedQueryAttentionMatchesSerial()
    {
        ParallelRun.AssertMatchesSerial(Gqa(), Config(cp: 2));
        ParallelRun.AssertMatchesSerial(Gqa(), Config(cp: 2, tp: 2) with { SequenceParallel = true }); // one group per tensor rank
        ParallelRun.AssertMatchesSerial(Gqa(), Config(cp: 2) with { ContextParallelComm = Ring });
        ParallelRun.AssertMatchesSerial(Gqa() with { NumAttentionHeads = 4, NumQueryGroups = 1 }, Config(cp: 4) with { ContextParallelComm = Ring });
    }

    [Fact]
    public void UlyssesMatchesSerial()
    {
        // Megatron's --cp-comm-type a2a: each rank attends over the whole sequence with 1/c of the heads and groups.
        ParallelRun.AssertMatchesSerial(Gqa(), Config(cp: 2) with { ContextParallelComm = Ulysses });              // 2 heads, 1 group a rank
        ParallelRun.AssertMatchesSerial(Gqa8(), Config(cp: 4) with { ContextParallelComm = Ulysses });             // 2 heads, 1 group a rank
        ParallelRun.AssertMatchesSerial(Gqa8(), Config(cp: 2, tp: 2) with { SequenceParallel = true, ContextParallelComm = Ulysses });
    }

    [Fact]
    public void HierarchicalAllToAllAndRingMatchSerial()
    {
        // --cp-comm-type a2a+p2p --hierarchical-context-parallel-sizes 2 2: Ulysses inside context ranks {0, 1} and {2, 3},
        // the ring across them on half the heads and groups.
        var hierarchical = Config(cp: 4) with { ContextParallelComm = ContextParallelCommType.A2aP2p, HierarchicalAllToAllSize = 2 };
        ParallelRun.AssertMatchesSerial(Gqa8(), hierarchical);
        ParallelRun.AssertMatchesSerial(Gqa8(), hierarchical with { TensorParallel = 2, SequenceParallel = true });
    }

    [Theory]
    [InlineData(ContextParallelCommType.AllGather)]
    [InlineData(ContextParallelCommType.P2p)]
    [InlineData(ContextParallelCommType.A2a)]
    public void AttentionDropoutIsDrawnAgainAlikeWhenTheCoreAttentionIsRecomputed(ContextParallelCommType comm)
    {
        // Context parallelism with hidden and attention dropout: selective recomputation re-runs the core attention (the
        // gathered keys' masked attention, or the ring) and must draw the same masks, so the run's losses and weights
        // are those without recomputation; with dropout they differ from the run without it.
        var spec = Gqa();
        var config = Config(cp: 2);
        var batches = Reference.Batches(spec, ParallelRun.Steps, config.GlobalBatch);
        var initial = Reference.Serial(spec, batches).Initial;
        Reference.Run[] Train(RecomputeGranularity r, double p) =>
            ParallelRun.Train(spec with { HiddenDropout = p, AttentionDropout = p }, config with { Recompute = new RecomputeSpec(r), ContextParallelComm = comm },
                batches, initial);
        var plain = Train(RecomputeGranularity.None, 0.2);
        var recomputed = Train(RecomputeGranularity.Selective, 0.2);
        var undropped = Train(RecomputeGranularity.None, 0);
        for (int r = 0; r < plain.Length; r++)
        {
            Reference.AssertClose(recomputed[r].Losses, plain[r].Losses, $"rank {r} losses");
            foreach (var (name, w) in plain[r].Final) Reference.AssertClose(recomputed[r].Final[name], w, $"rank {r} {name}");
            Assert.NotEqual(undropped[r].Losses[0], plain[r].Losses[0]);
        }
    }

    [Theory]
    [InlineData(ContextParallelCommType.AllGather)]
    [InlineData(ContextParallelCommType.P2p)]
    public void KeysAndValuesTravelAsTheirGroups(ContextParallelCommType comm)
    {
        // Everything the context-parallel group moves is keys and values (and their gradients): half the groups, half the bytes.
        Assert.Equal(0.5, (double)ContextParallelBytes(Gqa(), comm) / ContextParallelBytes(Reference.Llama(), comm));
    }

    [Fact]
    public void UlyssesAllToAllsQueriesKeysValuesAndOutputOnceEachWay()
    {
        // Each layer of each micro-batch: forward Q, K, V and O, backward their gradients, each a rank's s/c = 8 tokens in fp32.
        // Q and O: 8 x 4 heads x head dim 8 x 4 B = 1 KiB; K and V: 8 x g groups x 8 x 4 B. Two layers, two micro-batches.
        static long Bytes(int groups) => 2 * 2 * 2 * (2 * 1024 + 2 * 8 * groups * 8 * 4);
        Assert.Equal(Bytes(groups: 4), ContextParallelBytes(Reference.Llama(), Ulysses));
        Assert.Equal(Bytes(groups: 2), ContextParallelBytes(Gqa(), Ulysses));
    }

    private static long ContextParallelBytes(ModelSpec spec, ContextParallelCommType comm)
    {
        TorchRuntime.Initialize();
        var config = Config(cp: 2);
        var batch = Reference.Batches(spec, 1, config.GlobalBatch)[0];
        return InProcessJob.Run(config.WorldSize, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(world.Size, 1, 2, 1));
            using var trainer = new ParallelTrainer(groups, spec, config with { ContextParallelComm = comm }, CPU, 1, Reference.Adam);
            using var scope = NewDisposeScope();
            trainer.Step(Reference.Lr, i =>
            {
                var rows = batch.narrow(0, i, 1);
                return (rows[.., ..spec.SeqLength], rows[.., 1..]);
            });
            return groups.Context.Stats.Bytes;
        })[0];
    }
}
