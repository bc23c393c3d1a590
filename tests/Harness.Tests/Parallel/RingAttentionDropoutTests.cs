using TorchSharp;
using Harness.Executor.ContextParallel;
using Harness.Executor.Distributed;
using Harness.Simulator.Specs;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.Transformer;
using static TorchSharp.torch;

// References written with libtorch's own matmul (Native.MatrixProduct says why the executor does not call it; a test's small
// CPU tensors do not run out of memory).
#pragma warning disable RS0030

namespace Harness.Tests.Parallel;

/// <summary>
/// Ring attention with attention dropout against attention written out over every rank's keys with the same masks:
/// each rank's output and every gradient (queries here, keys and values summed over the ranks whose queries see them).
/// </summary>
public class RingAttentionDropoutTests
{
    [Theory]
    [InlineData(2, 2)]
    [InlineData(4, 1)]
    public void MatchesAttentionWrittenOutWithTheSameMasks(int cpSize, int groups)
    {
        TorchRuntime.Initialize();
        const long b = 1, heads = 4, chunk = 3, d = 8;
        const double p = 0.3;
        long s = 2 * chunk * cpSize;
        var results = InProcessJob.Run(cpSize, world =>
        {
            using var pgs = ProcessGroups.Create(world, RankOrder.For(world.Size, 1, world.Size, 1));
            var cp = new ContextParallelism(pgs.Context, ContextParallelCommType.P2p);
            using var g = new Generator(21);
            // The full sequence, alike on every rank, and this rank's two load-balanced chunks of it.
            var qFull = randn(new[] { b, heads, s, d }, dtype: ScalarType.Float64, generator: g);
            var kFull = randn(new[] { b, groups, s, d }, dtype: ScalarType.Float64, generator: g);
            var vFull = randn(new[] { b, groups, s, d }, dtype: ScalarType.Float64, generator: g);
            using var own = new Generator(5 + (ulong)world.Rank);
            var dOut = randn(new[] { b, heads, 2 * chunk, d }, dtype: ScalarType.Float64, generator: own);
            Tensor Local(Tensor x) => cp.Slice(x.transpose(1, 2)).transpose(1, 2).contiguous();

            using var ringRng = new DropoutRng(9, 0, 0, false, CPU);
            using var referenceRng = new DropoutRng(9, 0, 0, false, CPU);
            ringRng.StartIteration(0);
            referenceRng.StartIteration(0);
            var (q, k, v) = (Local(qFull).requires_grad_(), Local(kFull).requires_grad_(), Local(vFull).requires_grad_());
            var ring = RingAttention.Apply(q, k, v, cp, p, ringRng);
            ring.backward(new[] { dOut });

            // Written out: this rank's queries against every rank's keys, each source block's columns dropped with the mask
            // its key and part number give; the keys' and values' gradients summed over the ranks.
            long key = referenceRng.NextModelParallelKey();
            var q2 = Local(qFull).requires_grad_();
            var (k2, v2) = (kFull.clone().requires_grad_(), vFull.clone().requires_grad_());
            var qPos = cp.Positions(2 * chunk, CPU);
            var qGrouped = q2.reshape(b, groups, heads / groups, 2 * chunk, d);
            var blocks = Enumerable.Range(0, cpSize).Select(r => ContextParallelism.GlobalPositions(s, r, cpSize)).ToList();
            var allKeyPos = tensor(blocks.SelectMany(x => x).ToArray());
            var scores = qGrouped.matmul(k2.index_select(2, allKeyPos).unsqueeze(2).transpose(-2, -1)).Over(Math.Sqrt(d));
            scores = scores.FilledWhere(allKeyPos.unsqueeze(0).gt(qPos.unsqueeze(1)), double.NegativeInfinity);
            var probabilities = scores.softmax(-1);
            var dropped = new List<Tensor>();
            for (int r = 0; r < cpSize; r++)
            {
                var block = probabilities.narrow(-1, r * 2 * chunk, 2 * chunk);
                var draw = rand(block.shape, dtype: ScalarType.Float32, generator: referenceRng.Seed(key, r + 1));
                using var drop = p.ToScalar();
                dropped.Add(block.mul(draw.ge(drop)).Times(1 / (1 - p)));
            }
            var reference = cat(dropped.ToArray(), -1).matmul(v2.index_select(2, allKeyPos).unsqueeze(2)).reshape(b, heads, 2 * chunk, d);
            reference.backward(new[] { dOut });
            var (dk, dv) = (k2.grad!.clone(), v2.grad!.clone());
            world.AllReduce(dk);
            world.AllReduce(dv);
            return new[]
            {
                (ring - reference).abs().max().item<double>(),
                (q.grad! - q2.grad!).abs().max().item<double>(),
                (k.grad! - Local(dk)).abs().max().item<double>(),
                (v.grad! - Local(dv)).abs().max().item<double>(),
            };
        });
        // The ring computes in float32: agreement to float32 rounding, where other masks would differ by O(1).
        foreach (var errors in results)
            Assert.All(errors, e => Assert.True(e < 2e-5, $"{string.Join(", ", errors)}"));
    }
}
