namespace Harness.Simulator.Schedule;

/// <summary>
/// Simulates one iteration of Megatron's 1F1B (PipeDream-Flush) or interleaved 1F1B schedule, op by op on each
/// pipeline rank, with the dependencies between stages: forward of micro-batch j on virtual stage k waits for
/// its forward on k−1 plus a p2p transfer; backward on k waits for the backward on k+1 (or, on the last
/// virtual stage, its own forward). Each rank runs its ops in Megatron's order (schedules.py): a warm-up of
/// forwards, a steady state alternating one forward and one backward, and a cool-down of backwards; the
/// interleaved warm-up is (p − r − 1)·2 + (v − 1)·p forwards on rank r. Virtual stage k = chunk·p + rank.
/// Also tracks activation memory (in-flight micro-batches, offload, temporaries) and the data-parallel
/// gradient reduction of each chunk, which starts when the chunk's last backward ends.
/// No allocation: scratch arrays are per thread and reused.
/// </summary>
public static class PipelineSimulator
{
    [ThreadStatic] private static double[]? forwardDone;
    [ThreadStatic] private static double[]? backwardDone;
    [ThreadStatic] private static double[]? scratch;

    public static void Run(in PipelineCosts k, ScheduleResult result)
    {
        int p = k.P, v = k.V, m = k.M, stages = p * v, opsPerRank = 2 * m * v;
        int cells = m * stages;
        var fDone = Rent(ref forwardDone, cells);
        var bDone = Rent(ref backwardDone, cells);
        // Per rank: next op index, clock, live activation bytes; per (rank, chunk): when its gradients are final.
        var s = Rent(ref scratch, 3 * p + stages);
        var next = s.AsSpan(0, p);
        var clock = s.AsSpan(p, p);
        var live = s.AsSpan(2 * p, p);
        var gradsReady = s.AsSpan(3 * p, stages);
        fDone.AsSpan(0, cells).Fill(-1);
        bDone.AsSpan(0, cells).Fill(-1);
        next.Clear(); clock.Clear(); live.Clear();
        Array.Clear(result.ActivationPeak); Array.Clear(result.OffloadStall); Array.Clear(result.P2pBusy);

        int finished = 0;
        while (finished < p)
        {
            bool progressed = false;
            for (int r = 0; r < p; r++)
            {
                int j = (int)next[r];
                if (j >= opsPerRank) continue;
                int warmup = Warmup(p, v, m, r);
                while (j < opsPerRank)
                {
                    var (forward, mb, chunk) = OpAt(j, warmup, m, v, p);
                    int stage = chunk * p + r;
                    int cell = mb * stages + stage;
                    double ready;
                    if (forward)
                        ready = stage == 0 ? 0 : Arrival(fDone[cell - 1], k.P2p);
                    else
                        ready = stage == stages - 1 ? fDone[cell] : Arrival(bDone[cell + 1], k.P2p);
                    if (ready < 0) break; // its input has not been produced yet: let the other ranks run

                    bool first = stage == 0, last = stage == stages - 1;
                    double work = forward
                        ? k.ChunkForward + (first ? k.FirstForwardExtra : 0) + (last ? k.LastForwardExtra : 0)
                        : k.ChunkBackward + (first ? k.FirstBackwardExtra : 0) + (last ? k.LastBackwardExtra : 0);
                    bool offloaded = k.OffloadRatio > 0 && !last;
                    double duration = offloaded ? Math.Max(work, k.OffloadTransfer) : work;
                    double start = Math.Max(clock[r], ready);
                    double end = start + duration;
                    result.OffloadStall[r] += duration - work;

                    double bytes = k.ChunkActivations + (first ? k.FirstExtraActivations : 0) + (last ? k.LastExtraActivations : 0);
                    double offload = offloaded ? k.OffloadRatio * bytes : 0;
                    double peak;
                    if (forward)
                    {
                        live[r] += bytes;
                        peak = live[r] + (last ? k.LastForwardTransient : 0);
                        live[r] -= offload;
                        fDone[cell] = end;
                    }
                    else
                    {
                        live[r] += offload;
                        peak = live[r] + k.BackwardTransient + (last ? k.LastBackwardTransient : 0);
                        live[r] -= bytes;
                        bDone[cell] = end;
                        if (mb == m - 1) gradsReady[stage] = end;
                    }
                    if (peak > result.ActivationPeak[r]) result.ActivationPeak[r] = peak;

                    // A send the rank must wait for when p2p does not overlap compute.
                    bool sends = forward ? !last : !first;
                    if (sends && !k.P2pOverlapped && k.P2p > 0)
                    {
                        end += k.P2p;
                        result.P2pBusy[r] += k.P2p;
                    }
                    clock[r] = end;
                    j++;
                    progressed = true;
                }
                next[r] = j;
                if (j >= opsPerRank) finished++;
            }
            if (!progressed)
                throw new InvalidOperationException("pipeline schedule deadlocked: the simulator's op order is inconsistent.");
        }

        for (int r = 0; r < p; r++)
        {
            result.ComputeEnd[r] = clock[r];
            // Gradient reduction of each chunk on the data-parallel stream, in the order chunks become final
            // (backward runs chunks from last to first).
            double stream = k.GradientReduceOverlapped ? 0 : clock[r];
            for (int chunk = v - 1; chunk >= 0; chunk--)
            {
                int stage = chunk * p + r;
                double reduce = k.ChunkGradientReduce
                    + (stage == 0 ? k.FirstExtraGradientReduce : 0)
                    + (stage == stages - 1 ? k.LastExtraGradientReduce : 0);
                stream = Math.Max(stream, k.GradientReduceOverlapped ? gradsReady[stage] : 0) + reduce;
            }
            result.Finish[r] = Math.Max(clock[r], stream) + k.Rank(r).GradientReduceAfter;
        }
    }

    /// <summary>Forward ops a rank runs before its first backward (Megatron's num_warmup_microbatches).</summary>
    public static int Warmup(int p, int v, int m, int rank) =>
        v == 1 ? Math.Min(p - rank - 1, m) : Math.Min((p - rank - 1) * 2 + (v - 1) * p, m * v);

    /// <summary>The j-th op of a rank: forward or backward, micro-batch, model chunk.</summary>
    private static (bool Forward, int MicroBatch, int Chunk) OpAt(int j, int warmup, int m, int v, int p)
    {
        int total = m * v, steady = total - warmup;
        bool forward;
        int i;
        if (j < warmup) { forward = true; i = j; }
        else if (j < warmup + 2 * steady)
        {
            int q = (j - warmup) >> 1;
            forward = ((j - warmup) & 1) == 0;
            i = forward ? warmup + q : q;
        }
        else { forward = false; i = steady + (j - warmup - 2 * steady); }
        if (v == 1) return (forward, i, 0);
        // Megatron's interleaving: groups of p micro-batches run through all v chunks in turn.
        int group = i / (p * v), inGroup = i % (p * v);
        int chunk = inGroup / p;
        return (forward, group * p + inGroup % p, forward ? chunk : v - 1 - chunk);
    }

    private static double Arrival(double done, double p2p) => done < 0 ? -1 : done + p2p;

    private static double[] Rent(ref double[]? buffer, int size)
    {
        if (buffer is null || buffer.Length < size) buffer = new double[Math.Max(size, 64)];
        return buffer;
    }
}
