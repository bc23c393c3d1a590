using Harness.Executor.Distributed;
using Harness.Simulator.Specs;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Tests.Distributed;

public class InProcessCommunicatorTests
{
    public InProcessCommunicatorTests() => TorchRuntime.Initialize(ExecutionDevice.Cpu);

    /// <summary>Rank r's test tensor: [r+1, 10(r+1), 100(r+1)].</summary>
    private static Tensor Own(int rank, ScalarType dtype = ScalarType.Float32) =>
        tensor(new float[] { rank + 1, 10 * (rank + 1), 100 * (rank + 1) }).to(dtype);

    [Fact]
    public void CollectivesGiveTheHandComputedValues()
    {
        var results = InProcessJob.Run(4, c =>
        {
            using var scope = NewDisposeScope();
            var sum = Own(c.Rank); c.AllReduce(sum);                       // 1+2+3+4 = 10
            var max = Own(c.Rank); c.AllReduce(max, ReduceOp.Max);
            var avg = Own(c.Rank); c.AllReduce(avg, ReduceOp.Avg);
            var gathered = zeros(12); c.AllGather(Own(c.Rank), gathered);
            var scattered = zeros(3); c.ReduceScatter(HeldScalars.Positions(0, 12).to(ScalarType.Float32).Times(c.Rank + 1), scattered);
            var bcast = Own(c.Rank); c.Broadcast(bcast, root: 2);
            var exchanged = zeros(8); c.AllToAll(HeldScalars.Positions(0, 8).to(ScalarType.Float32).Plus(100 * c.Rank), exchanged);
            return new[] { sum, max, avg, gathered, scattered, bcast, exchanged }.Select(t => t.data<float>().ToArray()).ToArray();
        });
        for (int r = 0; r < 4; r++)
        {
            var x = results[r];
            Assert.Equal(new float[] { 10, 100, 1000 }, x[0]);
            Assert.Equal(new float[] { 4, 40, 400 }, x[1]);
            Assert.Equal(new float[] { 2.5f, 25, 250 }, x[2]);
            Assert.Equal(new float[] { 1, 10, 100, 2, 20, 200, 3, 30, 300, 4, 40, 400 }, x[3]);
            // Block r of arange(12)·(1+2+3+4): elements 3r..3r+2 times 10.
            Assert.Equal(new float[] { 30 * r, 30 * r + 10, 30 * r + 20 }, x[4]);
            Assert.Equal(new float[] { 3, 30, 300 }, x[5]);
            // Block j comes from rank j: its elements 2r and 2r + 1, arange(8) + 100j.
            Assert.Equal(Enumerable.Range(0, 4).SelectMany(j => new float[] { 100 * j + 2 * r, 100 * j + 2 * r + 1 }), x[6]);
        }
    }

    [Fact]
    public void SumsAreBitIdenticalOnEveryRankAndFollowRankOrder()
    {
        // Values whose float sum depends on the order: ((1e8 + 1) - 1e8) + 1 = 1 in rank order.
        float[] values = [1e8f, 1f, -1e8f, 1f];
        var results = InProcessJob.Run(4, c =>
        {
            var t = tensor(new[] { values[c.Rank] });
            c.AllReduce(t);
            return t.item<float>();
        });
        float expected = ((values[0] + values[1]) + values[2]) + values[3];
        Assert.All(results, v => Assert.Equal(expected, v));
    }

    [Fact]
    public void WorksForBf16AndInt64AndInPlaceAllGather()
    {
        var results = InProcessJob.Run(2, c =>
        {
            var b = Own(c.Rank, ScalarType.BFloat16); c.AllReduce(b);
            var i = tensor(new long[] { c.Rank + 5 }); c.AllReduce(i);
            // Megatron's distributed optimizer gathers in place: the input is this rank's block of the output.
            var buffer = HeldScalars.Positions(0, 4).to(ScalarType.Float32).Plus(10 * c.Rank);
            c.AllGather(buffer.narrow(0, 2 * c.Rank, 2), buffer);
            return (b.to(ScalarType.Float32).data<float>().ToArray(), i.item<long>(), buffer.data<float>().ToArray());
        });
        Assert.All(results, r =>
        {
            Assert.Equal(new float[] { 3, 30, 300 }, r.Item1);
            Assert.Equal(11, r.Item2);
            Assert.Equal(new float[] { 0, 1, 12, 13 }, r.Item3);
        });
    }

    [Fact]
    public void SendRecvInBothDirectionsInsideAGroup()
    {
        var results = InProcessJob.Run(3, c =>
        {
            int next = (c.Rank + 1) % 3, prev = (c.Rank + 2) % 3;
            var got = zeros(3);
            using (c.Group())
            {
                c.Send(Own(c.Rank), next);
                c.Recv(got, prev);
            }
            return got.data<float>().ToArray();
        });
        for (int r = 0; r < 3; r++)
            Assert.Equal(Own((r + 2) % 3).data<float>().ToArray(), results[r]);
    }

    [Fact]
    public void SplitFormsGroupsByColorOrderedByKey()
    {
        var results = InProcessJob.Run(4, c =>
        {
            // Even and odd ranks; keys reverse the order inside each group.
            using var sub = c.Split(c.Rank % 2, -c.Rank, "parity")!;
            var t = tensor(new float[] { c.Rank });
            sub.AllGather(t.clone(), t = zeros(2));
            using var none = c.Split(c.Rank == 0 ? 0 : ICommunicator.NoColor, 0, "only0");
            return (sub.Rank, sub.Size, t.data<float>().ToArray(), none is null);
        });
        Assert.Equal((1, 2, false), (results[0].Item1, results[0].Item2, results[0].Item4));
        Assert.Equal(new float[] { 2, 0 }, results[0].Item3);
        Assert.Equal((0, 2, true), (results[3].Item1, results[3].Item2, results[3].Item4));
        Assert.Equal(new float[] { 3, 1 }, results[3].Item3);
    }

    [Fact]
    public void AMismatchedCollectiveTimesOutAndNamesTheRank()
    {
        var e = Assert.Throws<RankFailuresException>(() => InProcessJob.Run(2, c =>
        {
            if (c.Rank == 0) c.AllReduce(zeros(1)); // rank 1 never joins
        }, TimeSpan.FromMilliseconds(300)));
        Assert.Contains("rank 0: rank 0 of group world (world rank 0): all-reduce did not complete within 0 s", e.Message);
    }

    [Fact]
    public void OneRanksFailureAbortsTheOthersAndIsReported()
    {
        var e = Assert.Throws<RankFailuresException>(() => InProcessJob.Run(3, c =>
        {
            if (c.Rank == 2) throw new InvalidOperationException("loss is NaN");
            c.Barrier();
        }));
        Assert.Equal("rank 2: loss is NaN", e.Message);
    }

    [Fact]
    public void ProcessGroupsMatchTheLayout()
    {
        var layout = new RankOrder(TensorParallel: 2, ContextParallel: 1, DataParallel: 2, PipelineParallel: 2);
        var seen = InProcessJob.Run(8, world =>
        {
            using var g = ProcessGroups.Create(world, layout);
            // Each group gathers its members' world ranks.
            int[] Members(ICommunicator? c)
            {
                if (c is null) return [];
                var all = zeros(c.Size, dtype: ScalarType.Int64);
                c.AllGather(tensor(new long[] { world.Rank }), all);
                return all.data<long>().Select(v => (int)v).ToArray();
            }
            return (Tp: Members(g.Tensor), Dp: Members(g.Data), Pp: Members(g.Pipeline), Mp: Members(g.ModelParallel), Emb: Members(g.Embedding), g.TensorRank, g.PipelineRank);
        });
        for (int r = 0; r < 8; r++)
        {
            Assert.Equal(layout.GroupOf(r, ParallelDims.Tensor), seen[r].Tp);
            Assert.Equal(layout.GroupOf(r, ParallelDims.Data), seen[r].Dp);
            Assert.Equal(layout.GroupOf(r, ParallelDims.Pipeline), seen[r].Pp);
            Assert.Equal(layout.GroupOf(r, ParallelDims.Tensor | ParallelDims.Pipeline), seen[r].Mp);
            Assert.Equal(layout.Coordinates(r).Tp, seen[r].TensorRank);
        }
        Assert.Equal(new[] { 1, 5 }, seen[5].Emb); // with pp 2 both stages hold the embedding
    }
}
