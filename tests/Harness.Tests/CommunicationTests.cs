using Harness.Simulator.Costs;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Tests;

public class CommunicationTests
{
    private static readonly GpuSpec H800 = GpuPresets.All["h800"];
    private static readonly GpuSpec A100 = GpuPresets.All["a100-80gb"];

    [Fact]
    public void KwaisContextParallelExchangeWithoutOverlapIsOnTheCriticalPath()
    {
        // Llama2-70B (8 key/value groups of head dim 128), s 8192, t2 c4 on one H800 node: a rank's keys and values of one
        // layer are 2048 tokens x 2 x 8/2 groups x 128 x 2 B = 4 MiB. Megatron-Kwai without --context-parallel-comm-
        // overlap-gemm all-gathers the 16 MiB over the 4 ranks in forward (NVLink 200 GB/s at NCCL's 80%, 3 us a step):
        // 3/4 x 16 MiB / 160 GB/s + 3 x 3 us = 87.6 us, and reduce-scatters their gradients in backward in as long.
        double exchange = 0.75 * 16777216 / 160e9 + 3 * 3e-6;
        Assert.Equal(87.6e-6, exchange, 7);
        var m = Harness.Simulator.Specs.ModelPresets.All["llama2-70b"] with { SeqLength = 8192 };
        var cluster = ClusterSpec.Of(H800, 8);
        var c = new RunDescription(TensorParallel: 2, ContextParallel: 4, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4,
            ZeroStage: 1, Overlap: new OverlapSpec(ContextParallelComm: false), Precision: Precision.Bf16);
        var (forward, backward) = ContextParallelComm.Exposed(m, c, cluster);
        Assert.Equal(exchange, forward, 12);
        Assert.Equal(exchange, backward, 12);
        // On the critical path of every layer of every micro-batch: 4 micro-batches x 80 layers x both directions.
        var exposed = Harness.Simulator.Estimator.Estimate(m, cluster, c);
        Assert.Equal(4 * 80 * 2 * exchange, exposed.Time.ContextParallelComm, 9);
        // Overlapped (Megatron's ring, Kwai's QKV-split all-gather), most of it hides behind attention.
        var hidden = Harness.Simulator.Estimator.Estimate(m, cluster, c with { Overlap = new OverlapSpec() });
        Assert.True(hidden.Time.ContextParallelComm < 0.5 * exposed.Time.ContextParallelComm);
        Assert.True(hidden.StepTimeSeconds < exposed.StepTimeSeconds);
    }

    [Fact]
    public void UlyssesAllToAllsQueriesKeysValuesAndOutputOnTheCriticalPath()
    {
        // Llama2-70B (64 heads, 8 key/value groups of head dim 128), s 8192, t2 c4 on one H800 node, bf16: a rank's queries
        // (and output) of one layer are 2048 tokens x 32 heads x 128 x 2 B = 16 MiB, its keys (and values) 2048 x 4 x 128 x 2 B
        // = 2 MiB. Each all-to-all sends 3/4 of a rank's tensor over NVLink (200 GB/s at NCCL's 80%, 3 us to each of 3 peers):
        // forward Q, K, V and O, backward dO, dQ, dK and dV.
        double AllToAll(double bytes) => 0.75 * bytes / 160e9 + 3 * 3e-6;
        double layer = 2 * AllToAll(16777216) + 2 * AllToAll(2097152);
        Assert.Equal(212.95e-6, layer, 8);
        var m = Harness.Simulator.Specs.ModelPresets.All["llama2-70b"] with { SeqLength = 8192 };
        var cluster = ClusterSpec.Of(H800, 8);
        var c = new RunDescription(TensorParallel: 2, ContextParallel: 4, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4,
            ZeroStage: 1, Precision: Precision.Bf16, ContextParallelComm: ContextParallelCommType.A2a);
        var (forward, backward) = ContextParallelComm.AllToAll(m, c, cluster);
        Assert.Equal(layer, forward, 12);
        Assert.Equal(layer, backward, 12);
        // Not hidden behind attention (Megatron's overlap switch is the ring's): every layer of every micro-batch, both ways.
        Assert.Equal(4 * 80 * 2 * layer, Harness.Simulator.Estimator.Estimate(m, cluster, c).Time.ContextParallelComm, 9);
    }

    [Fact]
    public void HierarchicalAllToAllInsideTheNodeRingAcrossNodes()
    {
        // Llama2-70B, s 8192, t2 c8 on two H800 nodes, --cp-comm-type a2a+p2p --hierarchical-context-parallel-sizes 4 2: the
        // all-to-all groups are 4 consecutive context ranks (2 apart: one node), the rings pair ranks 8 apart (two nodes).
        // A rank holds 1024 tokens: Q and O 1024 x 32 x 128 x 2 B = 8 MiB, K and V 1 MiB, all-to-all over 4 on NVLink
        // (160 GB/s, 3 us to each of 3 peers); then one ring step of its 2 MiB of keys and values (s/2 tokens of 1 of the 4
        // groups, twice) over a 100 Gb/s NIC at NCCL's 90% with 6 us latency, and in backward their gradients with them.
        double AllToAll(double bytes) => 0.75 * bytes / 160e9 + 3 * 3e-6;
        double a2a = 2 * AllToAll(8388608) + 2 * AllToAll(1048576), step = 2097152 / 11.25e9 + 6e-6;
        var m = Harness.Simulator.Specs.ModelPresets.All["llama2-70b"] with { SeqLength = 8192 };
        var cluster = ClusterSpec.Of(H800, 16);
        var c = new RunDescription(TensorParallel: 2, ContextParallel: 8, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4,
            ZeroStage: 1, Precision: Precision.Bf16, ContextParallelComm: ContextParallelCommType.A2aP2p, HierarchicalAllToAllSize: 4);
        Assert.Empty(c.Validate(m, 16));
        var (a2aForward, a2aBackward) = ContextParallelComm.AllToAll(m, c, cluster);
        Assert.Equal(a2a, a2aForward, 12);
        Assert.Equal(a2a, a2aBackward, 12);
        var (ringForward, ringBackward) = ContextParallelComm.Layer(m, c, cluster);
        Assert.Equal(step, ringForward, 12);
        Assert.Equal(2 * step, ringBackward, 12);
    }

    [Fact]
    public void RingAllGatherAndAllReduceFollowTheAlphaBetaFormula()
    {
        // Inside a node: (n−1)/n·S/B + (n−1)α for all-gather, twice that for all-reduce (a 1 GB ring beats the tree's 2·S/B).
        var g = new GroupPlacement(8, 8);
        double S = 1e9, B = H800.IntraNode.BandwidthBytesPerSecond * Collectives.IntraNodeBusEfficiency, alpha = H800.IntraNode.LatencySeconds;
        double ag = 7.0 / 8 * S / B + 7 * alpha;
        Assert.Equal(ag, Collectives.AllGather(S, g, H800), 12);
        Assert.Equal(ag, Collectives.ReduceScatter(S, g, H800), 12);
        Assert.Equal(2 * ag, Collectives.AllReduce(S, g, H800), 12);
    }

    [Fact]
    public void AllToAllSendsAllButItsOwnShareOverTheSlowerLink()
    {
        // Each rank keeps 1/n of S and sends (n−1)/n: inside one node of 8 that is 7/8·S/B + 7α over NVLink;
        // over 16 ranks, 8 per node, the 8/16 bound for the other node go out on the NIC, which is the bottleneck.
        double S = 1e9;
        double bIn = H800.IntraNode.BandwidthBytesPerSecond * Collectives.IntraNodeBusEfficiency;
        double bOut = H800.InterNode.BandwidthBytesPerSecond * Collectives.InterNodeBusEfficiency;
        Assert.Equal(7.0 / 8 * S / bIn + 7 * H800.IntraNode.LatencySeconds,
            Collectives.AllToAll(S, new GroupPlacement(8, 8), H800), 12);
        Assert.Equal(8.0 / 16 * S / bOut + 8 * H800.InterNode.LatencySeconds,
            Collectives.AllToAll(S, new GroupPlacement(16, 8), H800), 12);
    }

    [Fact]
    public void GroupsSpanningNodesAreSlowerThanGroupsInsideOne()
    {
        double inside = Collectives.AllReduce(1e9, new GroupPlacement(8, 8), H800);
        double hierarchical = Collectives.AllReduce(1e9, new GroupPlacement(16, 8), H800);
        double across = Collectives.AllReduce(1e9, new GroupPlacement(16, 1), H800);
        Assert.True(inside < hierarchical && hierarchical < across, $"{inside} {hierarchical} {across}");
    }

    [Fact]
    public void MegatronRankOrderPlacesGroups()
    {
        // 256 GPUs, 8 per node, t 4, cp 1, dp 8: TP inside a node, DP ranks 4 apart (2 per node), PP across nodes.
        var c = new RunDescription(DataParallel: 8, TensorParallel: 4, PipelineParallel: 8, Precision: Precision.Bf16);
        Assert.True(Topology.TensorGroup(c, 8).IntraNode);
        Assert.Equal(new GroupPlacement(8, 2), Topology.DataWithContextGroup(c, 8));
        Assert.False(Topology.PipelineNeighboursShareNode(c, 8));
    }

    [Fact]
    public void TensorParallelBytesFallLinearlyWithTheSyncFactor()
    {
        var m = ModelPresets.All["caat-1b"];
        var c = new RunDescription(TensorParallel: 8, Precision: Precision.Bf16);
        double half = TensorParallelComm.BytesPerLayer(m, c with { SyncFactor = 0.5 });
        double quarter = TensorParallelComm.BytesPerLayer(m, c with { SyncFactor = 0.25 });
        double eighth = TensorParallelComm.BytesPerLayer(m, c with { SyncFactor = 0.125 });
        Assert.Equal(half / 2, quarter, 6);
        Assert.Equal(quarter / 2, eighth, 6);
        Assert.Equal(0, TensorParallelComm.BytesPerLayer(m, c with { SyncFactor = 0 }));
    }

    [Fact]
    public void StagesStraddlingTwoNodesReduceGradientsAcrossTheNetwork()
    {
        // t2 d3: six ranks per stage on 8-GPU nodes; stage 1 (ranks 6-11) spans two nodes, and so do its groups.
        var c = new RunDescription(DataParallel: 3, TensorParallel: 2, PipelineParallel: 8, Precision: Precision.Bf16);
        Assert.Equal(new GroupPlacement(3, 1), Topology.DataWithContextGroup(c, 8));
        Assert.False(Topology.PipelineNeighboursShareNode(c, 8));
        Assert.Equal(new GroupPlacement(2, 2), Topology.DataWithContextGroup(c with { DataParallel = 2 }, 8));
    }

    [Fact]
    public void AGroupSpreadUnevenlyOverNodesReducesAtThePaceOfItsSparsestNode()
    {
        // t2 c2 d9: 36-rank stages on 8-GPU nodes. Stage 1 starts 4 ranks into a node: its 18 data x context members
        // (every second rank) sit 2 on the first node, 4 on each full node, 2 on the last. t2 d6: 12-rank stages, 4 + 2.
        var c = new RunDescription(DataParallel: 9, TensorParallel: 2, ContextParallel: 2, PipelineParallel: 4, Precision: Precision.Bf16);
        Assert.Equal(new GroupPlacement(18, 2), Topology.DataWithContextGroup(c, 8));
        Assert.Equal(new GroupPlacement(6, 2), Topology.DataWithContextGroup(new RunDescription(DataParallel: 6, TensorParallel: 2, PipelineParallel: 8, Precision: Precision.Bf16), 8));
        // One stage only (p 1) starts at a node boundary: 4 members on each of four nodes and 2 on the fifth.
        Assert.Equal(new GroupPlacement(18, 2), Topology.DataWithContextGroup(c with { PipelineParallel = 1 }, 8));
        var h800 = GpuPresets.All["h800"];
        Assert.True(Collectives.ReduceScatter(1e9, new GroupPlacement(18, 2), h800) < Collectives.ReduceScatter(1e9, new GroupPlacement(18, 1), h800) / 1.8);
    }

    [Fact]
    public void TheSparsestNodeIsWhatCountingEveryMemberGives()
    {
        // Brute force: place every member of every stage's group (Megatron's rank order) and count per node.
        foreach (int t in new[] { 1, 2, 4, 8 })
        foreach (int c in new[] { 1, 2, 4 })
        foreach (int d in Enumerable.Range(1, 20))
        foreach (int p in new[] { 1, 2, 3, 5, 8, 16 })
        {
            var config = new RunDescription(DataParallel: d, TensorParallel: t, ContextParallel: c, PipelineParallel: p, Precision: Precision.Bf16);
            int size = d * c, fewest = size;
            for (int stage = 0; stage < p; stage++)
                foreach (var count in Enumerable.Range(0, size).Select(i => (stage * t * c * d + i * t) / 8).GroupBy(n => n).Select(g => g.Count()))
                    fewest = Math.Min(fewest, count);
            var placed = Topology.DataWithContextGroup(config, 8);
            Assert.Equal(size <= 1 ? 1 : t >= 8 ? 1 : fewest, placed.PerNode);
        }
    }

    [Fact]
    public void PipelineNeighboursShareANodeOnlyWhenTheWholePipelineDoes()
    {
        // t2 d2: four ranks per stage, two stages per 8-GPU node. With p 2 both stages sit in node 0; with p 8 the boundary
        // between stages 1 and 2 (ranks 7 and 8) and every second one after it cross the network.
        var c = new RunDescription(DataParallel: 2, TensorParallel: 2, PipelineParallel: 2, Precision: Precision.Bf16);
        Assert.True(Topology.PipelineNeighboursShareNode(c, 8));
        Assert.False(Topology.PipelineNeighboursShareNode(c with { PipelineParallel = 8 }, 8));
        Assert.True(Topology.PipelineNeighboursShareNode(c with { DataParallel = 1, PipelineParallel = 4 }, 8));
    }

    [Fact]
    public void WithoutScatterGatherEveryTensorParallelRankSendsTheWholeActivation()
    {
        // GPT 530B, t8 p35 on 8-GPU nodes: each stage fills a node, so every p2p crosses the network. Megatron's
        // scatter/gather sends S/t per rank and all-gathers S over NVLink on the receiver (Narayanan et al. 2021, 4.1);
        // --no-scatter-gather-tensors-in-pipeline sends S from every rank and gathers nothing.
        var m = ModelPresets.All["gpt-529.6b"];
        var cluster = ClusterSpec.Of(A100, 2240);
        var sliced = new RunDescription(DataParallel: 8, TensorParallel: 8, PipelineParallel: 35, GlobalBatch: 1920, Precision: Precision.Fp16);
        var whole = sliced with { PipelineScatterGather = false };
        double S = 1.0 * m.SeqLength * m.HiddenSize * 2;
        Assert.Equal(Collectives.SendRecv(S / 8, false, A100), PipelineCosts.Build(m, cluster, sliced).P2p, 12);
        Assert.Equal(Collectives.SendRecv(S, false, A100), PipelineCosts.Build(m, cluster, whole).P2p, 12);
        double gather = Collectives.AllGather(S, Topology.TensorGroup(sliced, 8), A100);
        Assert.Equal(gather, PipelineCosts.Build(m, cluster, sliced).Chunk.Forward - PipelineCosts.Build(m, cluster, whole).Chunk.Forward, 9);
    }

    [Fact]
    public void KwaiSequenceParallelOverlapLeavesTheForwardReduceScatterOnTheComputeStream()
    {
        // Table 8's "theirs": the forward all-gathers hide behind the GEMMs (costing NCCL's SM share), the two
        // reduce-scatters after the row-parallel GEMMs are added whole (Megatron-Kwai's layers.py).
        var m = ModelPresets.All["llama-175b"] with { SeqLength = 8192 };
        var cluster = ClusterSpec.Of(H800, 256);
        var te = new RunDescription(DataParallel: 8, TensorParallel: 4, PipelineParallel: 8, LayersPerVirtualStage: 2,
            SequenceParallel: true, GlobalBatch: 256, AttentionBackend: AttentionBackend.Flash, Overlap: new OverlapSpec(TensorParallelComm: true), Precision: Precision.Bf16);
        var kwai = te with { Overlap = new OverlapSpec(TensorParallelComm: true, TensorParallelForwardReduceScatter: false) };
        var tp = TensorParallelComm.Layer(m, te, cluster);
        Assert.Equal(2 * Collectives.ReduceScatter(TensorParallelComm.ActivationMessageBytes(m, te),
            Topology.TensorGroup(te, cluster.GpusPerNode), H800), tp.ForwardReduceScatter, 12);
        double extra = PipelineCosts.Build(m, cluster, kwai).Chunk.Forward - PipelineCosts.Build(m, cluster, te).Chunk.Forward;
        Assert.Equal(2 * (1 - PipelineCosts.NcclSmShare) * tp.ForwardReduceScatter, extra, 9);
    }

    [Fact]
    public void TensorParallelMovesFourActivationsPerLayer()
    {
        // 2 all-reduces forward and 2 backward of b·s·h (REFERENCE.md).
        var m = ModelPresets.All["llama-7b"];
        double S = 1.0 * m.SeqLength * m.HiddenSize * 2;
        Assert.Equal(4 * S, TensorParallelComm.BytesPerLayer(m, new RunDescription(TensorParallel: 4, Precision: Precision.Bf16)), 6);
    }
}
