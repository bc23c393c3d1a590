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
    /// <summary>Seconds from the first forward to the last backward on the slowest rank.</summary>
    public static double PipelineTime(in PipelineCosts k)
    {
        double chunk = k.ChunkForward + k.ChunkBackward;
        double work = k.M * Math.Max(k.RankWorkPerMicroBatch(0), k.RankWorkPerMicroBatch(k.P - 1));
        if (k.P == 1) return work + MicroStalls(k, 0);
        double fill = (k.P - 1) * chunk;
        double ends = k.FirstForwardExtra + k.FirstBackwardExtra + k.LastForwardExtra + k.LastBackwardExtra
                      - Math.Max(k.FirstForwardExtra + k.FirstBackwardExtra, k.LastForwardExtra + k.LastBackwardExtra);
        return work + fill + ends + P2pExposure(k, chunk) + MicroStalls(k, 0);
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
        double stalls = 0;
        if (k.OffloadRatio > 0 && k.V == 1)
            stalls += k.M * (Math.Max(0, k.OffloadTransfer - k.ChunkForward) + Math.Max(0, k.OffloadTransfer - k.ChunkBackward));
        else if (k.OffloadRatio > 0)
        {
            // Interleaved (PipelineSimulator): the warm-up's forwards and the cool-down's backwards wait for their copy
            // one by one; in the steady state a forward and a backward share one offload and one reload.
            int warmup = ScheduleOrder.Warmup(k.P, k.V, k.M, rank);
            stalls += warmup * Math.Max(0, k.OffloadTransfer - k.ChunkForward)
                      + (warmup + 1) * Math.Max(0, k.OffloadTransfer - k.ChunkBackward)
                      + (k.M * k.V - warmup - 1) * Math.Max(0, k.OffloadTransfer - k.ChunkForward - k.ChunkBackward);
        }
        if (k.P > 1 && !(k.P2pOverlapped && k.V > 1))
            stalls += k.M * (2 * k.V - (rank == 0 || rank == k.P - 1 ? 1 : 0)) * k.P2p;
        return stalls;
    }

    /// <summary>Data-parallel gradient reduction left exposed after the last backward of a rank.</summary>
    public static double ExposedGradientReduce(in PipelineCosts k, int rank)
    {
        double total = k.V * k.ChunkGradientReduce
                       + (rank == 0 ? k.FirstExtraGradientReduce : 0) + (rank == k.P - 1 ? k.LastExtraGradientReduce : 0);
        double after = k.Rank(rank).GradientReduceAfter;
        if (!k.GradientReduceOverlapped) return total + after;
        // Chunks become final one after another in the cool-down, p micro-batch backwards apart, and each chunk's
        // buckets during its own final backward: all but the last layer's share can hide.
        double layers = Math.Max(1, k.LayersPerChunk);
        double window = (k.V - 1) * k.P * k.ChunkBackward + k.ChunkBackward * (layers - 1) / layers;
        double lastChunk = k.ChunkGradientReduce + (rank == 0 ? k.FirstExtraGradientReduce : 0);
        double exposed = Math.Max(lastChunk / layers, total - window);
        return Math.Max(exposed, PipelineCosts.NcclSmShare * (total - exposed)) + after;
    }

    /// <summary>Peak activation bytes of a rank: the micro-batches in flight at its first backward (Megatron's
    /// warm-up plus one), each less what it offloaded, plus the one being reloaded and the temporaries.</summary>
    public static double ActivationPeak(in PipelineCosts k, int rank)
    {
        int inFlight = Math.Min(ScheduleOrder.Warmup(k.P, k.V, k.M, rank) + 1, k.M * k.V);
        bool last = rank == k.P - 1;
        double freed = k.ChunkOffloaded - k.ChunkStranded;
        double kept = inFlight * (k.ChunkActivations - freed) + freed;
        if (rank == 0) kept += Math.Min(inFlight, k.M) * k.FirstExtraActivations;
        if (last) kept += k.LastExtraActivations + freed;
        return kept + k.BackwardTransient + (rank == 0 ? k.FirstBackwardTransient : 0) + (last ? k.LastBackwardTransient : 0);
    }
}
