using Harness.Simulator;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Tests;

public class PipelineScheduleTests
{
    /// <summary>Uniform chunks: forward 1 s, backward 2 s, no extras, free p2p, nothing else.</summary>
    private static PipelineCosts Uniform(int p, int v, int m, double forward = 1, double backward = 2) => new()
    {
        P = p, V = v, M = m, Chunk = new(Forward: forward, Backward: backward, Compute: forward + backward),
        P2pOverlapped = true, GradientReduceOverlapped = true,
    };

    private static double Makespan(PipelineCosts k)
    {
        var result = ScheduleResult.Allocate(k.P);
        PipelineSimulator.Run(k, result);
        return result.ComputeEnd.Max();
    }

    [Theory]
    [InlineData(4, 8)]
    [InlineData(8, 32)]
    [InlineData(2, 1)]
    [InlineData(5, 3)]
    public void OneFOneBBubbleIsPMinusOneOverM(int p, int m)
    {
        // Ideal time m·(F+B) per rank; the bubble adds (p−1)·(F+B): fraction (p−1)/m of the ideal.
        var k = Uniform(p, 1, m);
        double ideal = m * 3.0;
        Assert.Equal((p - 1.0) / m, (Makespan(k) - ideal) / ideal, 12);
    }

    [Theory]
    [InlineData(4, 2, 8)]
    [InlineData(8, 6, 32)]
    [InlineData(4, 4, 4)]
    [InlineData(3, 2, 9)]
    public void InterleavedBubbleIsPMinusOneOverVM(int p, int v, int m)
    {
        // Chunks of 1/v of a stage: ideal m·v·(F+B)/v per rank, bubble fraction (p−1)/(v·m).
        var k = Uniform(p, v, m, 1.0 / v, 2.0 / v);
        double ideal = m * 3.0;
        Assert.Equal((p - 1.0) / (v * m), (Makespan(k) - ideal) / ideal, 12);
    }

    [Theory]
    [InlineData(4, 1, 8)]
    [InlineData(8, 6, 32)]
    [InlineData(16, 6, 64)]
    public void ClosedFormIsExactForUniformStages(int p, int v, int m)
    {
        var k = Uniform(p, v, m, 0.7, 1.9);
        Assert.Equal(Makespan(k), ClosedForm.PipelineTime(k), 9);
    }

    [Fact]
    public void WarmupMatchesMegatron()
    {
        // schedules.py: 1F1B warm-up p − r − 1; interleaved (p − r − 1)·2 + (v − 1)·p, capped at m·v.
        Assert.Equal(3, ScheduleOrder.Warmup(4, 1, 8, 0));
        Assert.Equal(0, ScheduleOrder.Warmup(4, 1, 8, 3));
        Assert.Equal(7 * 2 + 5 * 8, ScheduleOrder.Warmup(8, 6, 32, 0));
        Assert.Equal(5 * 8, ScheduleOrder.Warmup(8, 6, 32, 7));
        Assert.Equal(8, ScheduleOrder.Warmup(4, 2, 4, 0));
    }

    [Fact]
    public void OverlappedP2pBlocksInTheWarmupAndCooldownOnly()
    {
        // p 4, v 2, m 8: rank 0 warms up with 10 forwards, each waiting for its exchange; its steady state overlaps;
        // the last steady-state backward (index 16 − 10 − 1 = 5) and the cool-down's wait. 1F1B always waits.
        Assert.Equal(Enumerable.Range(0, 16).Select(i => i < 10), Enumerable.Range(0, 16).Select(i => ScheduleOrder.BlocksOnItsExchange(4, 2, 8, 0, true, i)));
        Assert.Equal(Enumerable.Range(0, 16).Select(i => i >= 5), Enumerable.Range(0, 16).Select(i => ScheduleOrder.BlocksOnItsExchange(4, 2, 8, 0, false, i)));
        Assert.True(ScheduleOrder.BlocksOnItsExchange(4, 1, 8, 1, true, 5));
        // Non-interleaved, --overlap-p2p-communication changes nothing: Megatron's 1F1B waits for every exchange.
        var overlapped = Uniform(4, 1, 8) with { P2p = 0.25 };
        Assert.Equal(Makespan(overlapped with { P2pOverlapped = false }), Makespan(overlapped), 12);
    }

    [Theory]
    [InlineData(0.5, 6.125)]   // hides behind the last backward but for the last of 4 layers' share: 6 + 0.5/4
    [InlineData(2.0, 6.5)]     // longer than 3/4 of the 2 s backward: 6 + 2 − 1.5
    [InlineData(0.05, 6.0125)] // so short that only the last layer's share shows
    public void OverlappedGradientReductionRunsInBucketsDuringTheLastBackward(double reduce, double finish)
    {
        // One stage, two micro-batches (forward 1 s, backward 2 s: compute ends at 6 s), 4 layers; the hidden part slows
        // the backward by NCCL's SM share, which stays below what sticks out here.
        var k = Uniform(1, 1, 2);
        k = k with { Chunk = k.Chunk with { GradientReduce = reduce, Layers = 4 } };
        var result = ScheduleResult.Allocate(1);
        PipelineSimulator.Run(k, result);
        Assert.Equal(finish, result.Finish[0], 12);
        Assert.Equal(finish - 6, ClosedForm.ExposedGradientReduce(k, 0), 12);
    }

    [Fact]
    public void FirstStageHoldsPMicroBatchesIn1F1BAndMoreWhenInterleaved()
    {
        // Korthikanti et al. 2022: activations of p micro-batches in flight on the first stage; interleaving
        // multiplies that by 1 + (p−1)/(p·v). One unit of activation per stage-micro-batch.
        int p = 8, v = 6, m = 32;
        var plain = Uniform(p, 1, m);
        plain = plain with { Chunk = plain.Chunk with { Activations = 1 } };
        var run = ScheduleResult.Allocate(p);
        PipelineSimulator.Run(plain, run);
        Assert.Equal(p, run.ActivationPeak[0], 12);

        var interleaved = Uniform(p, v, m);
        interleaved = interleaved with { Chunk = interleaved.Chunk with { Activations = 1.0 / v } };
        PipelineSimulator.Run(interleaved, run);
        Assert.Equal(p * (1 + (p - 1.0) / (p * v)), run.ActivationPeak[0], 9);
    }

    [Fact]
    public void OffloadKeepsWhatEachMicroBatchDidNotOffload()
    {
        int p = 4, m = 8;
        var k = Uniform(p, 2, m);
        k = k with { Chunk = k.Chunk with { Activations = 1, Offloaded = 0.5, Stranded = 0.125 }, OffloadRatio = 0.5 };
        var run = ScheduleResult.Allocate(p);
        PipelineSimulator.Run(k, run);
        int inFlight = ScheduleOrder.Warmup(p, 2, m, 0) + 1;
        // Every in-flight chunk keeps the half it did not offload and the allocator's stranded bytes, and the one being
        // reloaded for its backward is whole again.
        Assert.Equal(inFlight * 0.625 + 0.375, run.ActivationPeak[0], 9);
        Assert.Equal(run.ActivationPeak[0], ClosedForm.ActivationPeak(k, 0), 9);
    }

    [Fact]
    public void OffloadCopiesStallPerOpInWarmupAndCooldownAndPerPairInTheSteadyState()
    {
        // p 4, v 2, m 8, forward 1 s, backward 2 s, each chunk's copy 2.5 s. Rank 0 runs (4 - 0 - 1)·2 + (2 - 1)·4 = 10
        // warm-up forwards, each waiting for the previous one's offload (1.5 s), then 16 - 10 - 1 = 5 steady-state
        // forward/backward pairs whose offload and reload both fit in the pair's 3 s, then 11 cool-down backwards, each
        // waiting for its reload (0.5 s): 10·1.5 + 11·0.5 = 20.5 s (Megatron-Kwai's schedules.py).
        var k = Uniform(4, 2, 8);
        k = k with { Chunk = k.Chunk with { Activations = 1, Offloaded = 0.5, OffloadTransfer = 2.5 }, OffloadRatio = 0.5 };
        var run = ScheduleResult.Allocate(4);
        PipelineSimulator.Run(k, run);
        Assert.Equal(20.5, run.OffloadStall[0], 9);
        Assert.Equal(20.5, ClosedForm.MicroStalls(k, 0), 9);
    }

    /// <summary>A configuration whose costs equal one simulated before on the thread (selective recomputation under flash
    /// attention recomputes nothing) is estimated from the replayed outcome exactly as from a fresh simulation.</summary>
    [Fact]
    public void EqualCostsReplayTheSimulatedOutcome()
    {
        var model = ModelPresets.All["llama-7b"];
        var cluster = ClusterSpec.Of(GpuPresets.All["h800"], 16);
        var none = new RunDescription(2, 2, 4, 2, 1, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 16, Precision: Precision.Bf16);
        var selective = none with { Recompute = RecomputeSpec.Selective };
        Assert.Equal(PipelineCosts.Build(model, cluster, none), PipelineCosts.Build(model, cluster, selective));
        StepEstimate? fresh = null, replayed = null;
        var first = new Thread(() => fresh = Estimator.Estimate(model, cluster, selective));
        first.Start();
        first.Join();
        var second = new Thread(() =>
        {
            Estimator.Estimate(model, cluster, none);
            replayed = Estimator.Estimate(model, cluster, selective);
        });
        second.Start();
        second.Join();
        Assert.Equal(fresh!.StepTimeSeconds, replayed!.StepTimeSeconds);
        Assert.Equal(fresh.ReservedBytes, replayed.ReservedBytes);
        Assert.Equal(fresh.Time, replayed.Time);
        Assert.Equal(fresh.Stages.Select(st => st.Memory), replayed.Stages.Select(st => st.Memory));
    }
}
