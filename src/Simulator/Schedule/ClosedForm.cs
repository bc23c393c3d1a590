namespace Harness.Simulator.Schedule;

/// <summary>
/// The pipeline schedule in closed form, for screening many configurations. With every chunk alike (no
/// embedding or output-layer extras, free p2p) the makespan of (interleaved) 1F1B is (m·v + p − 1)·(F + B) for
/// a chunk's forward F and backward B, i.e. a bubble of (p − 1)/(v·m) (Narayanan et al. 2021, section 2.2):
/// exact, as the simulator's tests show. Otherwise the slowest rank's work, plus the fill and drain of the
/// uniform chunks and the first and last stage extras, plus the p2p latency the schedule exposes.
/// </summary>
public static class ClosedForm
{
    /// <summary>
    /// Seconds from the first forward to the last backward on the slowest rank: its m·v chunks' work, plus the fill and
    /// drain, one chunk pass (F + B, with the embedding or output layer on the first and last ranks) on every other rank.
    /// With even stages that is the expression above, exact; with uneven stages (ranks' chunks of different lengths) it is
    /// the flow-shop estimate Σ t_r + (m − 1)·max t_r of 1F1B, which the simulator's tests compare against.
    /// Offload stalls are the middle chunks' (<see cref="MicroStalls"/>).
    /// </summary>
    public static double PipelineTime(in PipelineCosts k)
    {
        int slowest = SlowestRank(k);
        double work = k.M * k.RankWorkPerMicroBatch(slowest);
        if (k.P == 1) return work + MicroStalls(k, 0);
        double passes = 0;
        for (int r = 0; r < k.P; r++)
            if (r != slowest) passes += ChunkPass(k, r);
        var chunk = k.ChunkOf(slowest, 0);
        return work + passes + P2pExposure(k, chunk.Forward + chunk.Backward) + MicroStalls(k, slowest);
    }

    /// <summary>The rank with the most work per micro-batch: the first or last where the virtual stages are alike (the
    /// embedding and the output layer), any where they differ.</summary>
    public static int SlowestRank(in PipelineCosts k)
    {
        int slowest = k.P - 1;
        int step = k.Uneven ? 1 : Math.Max(1, k.P - 1);
        for (int r = 0; r < k.P; r += step)
            if (k.RankWorkPerMicroBatch(r) > k.RankWorkPerMicroBatch(slowest)) slowest = r;
        return slowest;
    }

    /// <summary>The forward and backward of rank <paramref name="rank"/>'s first model chunk, through which the fill and the
    /// drain pass, with the first and last stages' extras.</summary>
    private static double ChunkPass(in PipelineCosts k, int rank)
    {
        var chunk = k.ChunkOf(rank, 0);
        return chunk.Forward + chunk.Backward
               + (rank == 0 ? k.FirstForwardExtra + k.FirstBackwardExtra : 0)
               + (rank == k.P - 1 ? k.LastForwardExtra + k.LastBackwardExtra : 0);
    }

    /// <summary>
    /// Pipeline p2p latency d on the critical path, as the simulator finds it with uniform chunks. 1F1B: each
    /// steady-state micro-batch waits 2d(p−1)/p (the loop forward through p stages and back spans p periods),
    /// plus 2(p−2)·d in fill and drain. Interleaved: while d is below a chunk's forward plus backward the deeper
    /// warm-up hides it in steady state, leaving 2(p·v − 1)·d of fill and drain through every virtual stage;
    /// beyond that, each of the m·v forward/backward pairs waits about 0.7·(2d − F − B) more.
    /// </summary>
    private static double P2pExposure(in PipelineCosts k, double chunk)
    {
        double d = k.P2p;
        if (d <= 0) return 0;
        if (k.V == 1) return d * (2.0 * (k.P - 1) / k.P * k.M + 2.0 * (k.P - 2));
        if (!k.P2pOverlapped) return 0;
        return 2.0 * (k.P * k.V - 1) * d + 0.7 * k.M * k.V * Math.Max(0, 2 * d - chunk);
    }

    /// <summary>Offload stalls and the p2p sends one rank waits for over the iteration: every send without overlap (the
    /// non-interleaved 1F1B schedule never overlaps). With overlap the interleaved schedule still waits for the warm-up's
    /// and cool-down's exchanges (<see cref="ScheduleOrder.BlocksOnItsExchange"/>), but those ranks wait for their inputs
    /// there anyway: the simulation finds them absorbed, so the closed form counts none.</summary>
    public static double MicroStalls(in PipelineCosts k, int rank)
    {
        var chunk = k.Chunk;
        double stalls = 0;
        if (k.OffloadRatio > 0 && k.V == 1)
            stalls += k.M * (Math.Max(0, chunk.OffloadTransfer - chunk.Forward) + Math.Max(0, chunk.OffloadTransfer - chunk.Backward));
        else if (k.OffloadRatio > 0)
        {
            // Interleaved (PipelineSimulator): the warm-up's forwards and the cool-down's backwards wait for their copy
            // one by one; in the steady state a forward and a backward share one offload and one reload.
            int warmup = ScheduleOrder.Warmup(k.P, k.V, k.M, rank);
            stalls += warmup * Math.Max(0, chunk.OffloadTransfer - chunk.Forward)
                      + (warmup + 1) * Math.Max(0, chunk.OffloadTransfer - chunk.Backward)
                      + (k.M * k.V - warmup - 1) * Math.Max(0, chunk.OffloadTransfer - chunk.Forward - chunk.Backward);
        }
        if (k.P > 1 && !(k.P2pOverlapped && k.V > 1))
            stalls += k.M * (2 * k.V - (rank == 0 || rank == k.P - 1 ? 1 : 0)) * k.P2p;
        return stalls + k.M * k.V * (k.CpuOffloadForwardStall + k.CpuOffloadBackwardStall);
    }

    /// <summary>Data-parallel gradient reduction left exposed after the last backward of a rank.</summary>
    public static double ExposedGradientReduce(in PipelineCosts k, int rank)
    {
        // The rank's first chunk becomes final last.
        var chunk = k.ChunkOf(rank, 0);
        double total = k.RankChunks(rank).GradientReduce
                       + (rank == 0 ? k.FirstExtraGradientReduce : 0) + (rank == k.P - 1 ? k.LastExtraGradientReduce : 0);
        double after = k.Rank(rank).GradientReduceAfter;
        if (!k.GradientReduceOverlapped) return total + after;
        // Chunks become final one after another in the cool-down, p micro-batch backwards apart, and each chunk's
        // buckets during its own final backward: all but the last layer's share can hide.
        double layers = Math.Max(1, chunk.Layers);
        double window = (k.V - 1) * k.P * k.Chunk.Backward + chunk.Backward * (layers - 1) / layers;
        double lastChunk = chunk.GradientReduce + (rank == 0 ? k.FirstExtraGradientReduce : 0);
        double exposed = Math.Max(lastChunk / layers, total - window);
        return Math.Max(exposed, PipelineCosts.NcclSmShare * (total - exposed)) + after;
    }

    /// <summary>Peak activation bytes of a rank: the micro-batches in flight at its first backward (Megatron's
    /// warm-up plus one), each less what it offloaded, plus the one being reloaded and the temporaries.</summary>
    public static double ActivationPeak(in PipelineCosts k, int rank)
    {
        int inFlight = Math.Min(ScheduleOrder.Warmup(k.P, k.V, k.M, rank) + 1, k.M * k.V);
        bool last = rank == k.P - 1;
        // In flight: chunks of every one of the rank's model chunks, their mean activations each.
        double freed = k.Chunk.Offloaded - k.Chunk.Stranded;
        double kept = inFlight * (k.RankChunks(rank).Activations / k.V - freed) + freed;
        if (rank == 0) kept += Math.Min(inFlight, k.M) * k.FirstExtraActivations;
        if (last) kept += k.LastExtraActivations + freed;
        return kept + k.BackwardTransient + (rank == 0 ? k.FirstBackwardTransient : 0) + (last ? k.LastBackwardTransient : 0);
    }
}
