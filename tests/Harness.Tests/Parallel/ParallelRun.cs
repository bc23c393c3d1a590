using Harness.Executor.Distributed;
using Harness.Executor.Optimizer;
using Harness.Executor.Training;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>Runs a layout on in-process ranks through <see cref="ParallelTrainer"/> and compares it with <see cref="Reference.Serial"/>.</summary>
internal static class ParallelRun
{
    public const int Steps = 3;

    /// <summary>Every rank's run: losses, the last step's gradients and final weights by serial name. Dropout from the streams of
    /// seed 1234, as <see cref="Reference.Serial"/> draws it. Gradients sharded by the distributed optimizer (ZeRO 1 to 3) are
    /// this rank's pieces of them, named "name@start" (start: the piece's first element in the parameter).</summary>
    public static Reference.Run[] Train(ModelSpec spec, RunDescription config, Tensor[] batches, Dictionary<string, float[]> initial, double lr = Reference.Lr) =>
        InProcessJob.Run(config.WorldSize, world =>
        {
            var layout = RankOrder.For(world.Size, config.TensorParallel, config.ContextParallel, config.PipelineParallel);
            using var groups = ProcessGroups.Create(world, layout);
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam);
            int tpRank = groups.TensorRank, tpSize = config.TensorParallel;
            trainer.LoadWeights((name, p) => tensor(Reference.ShardOf(name, initial[name], spec, tpRank, tpSize)).view(p.shape));
            var losses = new List<float>();
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                losses.Add(trainer.Step(lr, MicroBatches(batch, config, groups.DataRank, spec.SeqLength), losses.Count).Loss);
            }
            // The gradients' wrappers and the shards' views are the scope's until libtorch returns (a bare temporary can be
            // finalized mid-call).
            using var read = NewDisposeScope();
            var named = trainer.NamedParameters().ToList();
            var grads = config.DistributedOptimizer ? ShardPieces(trainer, named) : named.ToDictionary(n => n.SerialName, n => n.Parameter.grad!.data<float>().ToArray());
            trainer.FinishParamSync();
            return new Reference.Run([.. losses], grads, named.ToDictionary(n => n.SerialName, n => n.Parameter.data<float>().ToArray()), initial);
        });

    /// <summary>Whether a gradient of <see cref="Train"/>'s is a piece of a parameter's ("name@start"), not the whole.</summary>
    private static bool IsPiece(string key) => key.Contains('@');

    /// <summary>This rank's reduced gradients as the distributed optimizer holds them, cut at parameter boundaries.</summary>
    private static Dictionary<string, float[]> ShardPieces(ParallelTrainer trainer, List<(string SerialName, TorchSharp.Modules.Parameter Parameter)> named)
    {
        var pieces = new Dictionary<string, float[]>();
        foreach (var (grads, offset) in trainer.ShardGradients!)
            foreach (var (_, p, at) in trainer.Buffer.Layout)
            {
                long lo = Math.Max(offset, at), hi = Math.Min(offset + grads.numel(), at + p.numel());
                if (hi <= lo) continue;
                string serial = named.Single(n => ReferenceEquals(n.Parameter, p)).SerialName;
                pieces[$"{serial}@{lo - at}"] = grads.narrow(0, lo - offset, hi - lo).data<float>().ToArray();
            }
        return pieces;
    }

    /// <summary>Megatron's sampler: micro-batch i of the global batch [g, s + 1] is data-parallel rank d's b rows of it, as tokens and labels.</summary>
    public static Func<int, (Tensor Tokens, Tensor Labels)> MicroBatches(Tensor batch, RunDescription config, int dataRank, int s) => i =>
    {
        var rows = batch.narrow(0, (i * config.DataParallel + dataRank) * config.MicroBatch, config.MicroBatch);
        return (rows[.., ..s], rows[.., 1..]);
    };

    /// <summary>
    /// Trains the layout without recomputation and with <paramref name="recompute"/> from the same weights on the same batches
    /// and asserts, on every rank, the same losses to the bit and gradients and final weights within <paramref name="tolerance"/>
    /// (relative; 0: the same bits); then that the recomputed layout matches the serial run.
    /// </summary>
    public static void AssertRecomputedAsWithout(ModelSpec spec, RunDescription config, RecomputeSpec recompute, double tolerance)
    {
        var batches = Reference.Batches(spec, Steps, config.GlobalBatch);
        var initial = Reference.Serial(spec, batches, microBatch: config.MicroBatch).Initial;
        var plain = Train(spec, config, batches, initial);
        var recomputed = Train(spec, config with { Recompute = recompute }, batches, initial);
        for (int r = 0; r < plain.Length; r++)
        {
            // The first forward is the same either way; later ones start from weights the recomputed gradients moved.
            Assert.Equal(plain[r].Losses[0], recomputed[r].Losses[0]);
            AssertSame(recomputed[r].Losses, plain[r].Losses, $"{recompute}: rank {r} losses");
            foreach (var (name, g) in plain[r].LastGrads.Where(g => !IsPiece(g.Key))) AssertSame(recomputed[r].LastGrads[name], g, $"{recompute}: rank {r} gradient of {name}");
            var pieces = plain[r].LastGrads.Keys.Where(IsPiece).Order(StringComparer.Ordinal).ToList();
            if (pieces.Count > 0)
                AssertSame(Reference.Concatenated(pieces.Select(k => recomputed[r].LastGrads[k])), Reference.Concatenated(pieces.Select(k => plain[r].LastGrads[k])),
                    $"{recompute}: rank {r} gradient shard");
            var names = plain[r].Final.Keys.Order().ToList();
            AssertSame(Reference.Concatenated(names.Select(n => recomputed[r].Final[n])), Reference.Concatenated(names.Select(n => plain[r].Final[n])),
                $"{recompute}: rank {r} final weights");
        }
        AssertMatchesSerial(spec, config with { Recompute = recompute });

        void AssertSame(float[] actual, float[] expected, string what)
        {
            if (tolerance == 0) Assert.True(actual.AsSpan().SequenceEqual(expected), $"{what}: not the same bits");
            else Reference.AssertClose(actual, expected, what, tolerance);
        }
    }

    /// <summary>Trains the layout and the serial model on the same global batches, each with the layout's --optimizer, and
    /// asserts agreement within 1e-5.</summary>
    /// <param name="gradientTolerance">Relative agreement of each gradient tensor; 1e-5 unless a test says why float32's
    /// summation order needs more.</param>
    public static void AssertMatchesSerial(ModelSpec spec, RunDescription config, double gradientTolerance = 1e-5, double lr = Reference.Lr)
    {
        var batches = Reference.Batches(spec, Steps, config.GlobalBatch);
        // Without recompute: it must not change the numbers.
        var serial = Reference.Serial(spec, batches, config.MicroBatch, IUpdateRule.For(config, Reference.Adam, fused: false), lr, config.FusedNorm, config.FusedElementwise);
        var ranks = Train(spec, config, batches, serial.Initial, lr);
        var layout = RankOrder.For(config.WorldSize, config.TensorParallel, config.ContextParallel, config.PipelineParallel);
        for (int r = 0; r < ranks.Length; r++)
        {
            int tpRank = layout.Coordinates(r).Tp;
            Reference.AssertClose(ranks[r].Losses, serial.Losses, $"rank {r} losses");
            foreach (var (name, grad) in ranks[r].LastGrads.Where(g => !IsPiece(g.Key)))
                Reference.AssertClose(grad, Reference.ShardOf(name, serial.LastGrads[name], spec, tpRank, config.TensorParallel), $"rank {r} gradient of {name}",
                    gradientTolerance);
            // A sharded optimizer's pieces (some of a few elements) are compared as one vector.
            var pieces = ranks[r].LastGrads.Where(g => IsPiece(g.Key)).OrderBy(g => g.Key, StringComparer.Ordinal).ToList();
            if (pieces.Count > 0)
                Reference.AssertClose(Reference.Concatenated(pieces.Select(g => g.Value)), Reference.Concatenated(pieces.Select(g =>
                {
                    var (name, start) = (g.Key[..g.Key.IndexOf('@')], int.Parse(g.Key[(g.Key.IndexOf('@') + 1)..]));
                    return Reference.ShardOf(name, serial.LastGrads[name], spec, tpRank, config.TensorParallel).AsSpan(start, g.Value.Length).ToArray();
                })), $"rank {r} gradient shard", gradientTolerance);
            var names = ranks[r].Final.Keys.Order().ToList();
            Reference.AssertClose(Reference.Concatenated(names.Select(n => ranks[r].Final[n])),
                Reference.Concatenated(names.Select(n => Reference.ShardOf(n, serial.Final[n], spec, tpRank, config.TensorParallel))), $"rank {r} final weights");
        }
        // Every serial parameter lives somewhere in the layout.
        Assert.Equal(serial.Final.Keys.Order(), ranks.SelectMany(r => r.Final.Keys).Distinct().Order());
        Assert.True(serial.Losses[^1] < serial.Losses[0], "the reference run does not train");
    }
}
