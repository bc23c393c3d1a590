namespace Harness.Simulator.Schedule;

/// <summary>
/// Simulates one iteration of Megatron's 1F1B (PipeDream-Flush) or interleaved 1F1B schedule op by op on every
/// pipeline rank (<see cref="ScheduleOrder"/> gives the ops in dependency order). An op starts when its rank is
/// free and its input has arrived: forward of micro-batch j on virtual stage k needs its forward on k−1 plus a
/// p2p transfer; backward on k needs the backward on k+1 plus a transfer (on the last stage, its own forward).
/// Durations differ by stage: the first virtual stage adds the embedding, the last the output layer and loss;
/// Megatron-Kwai's offload stretches an op to its host transfer when that is longer.
/// Also tracks activation memory per rank (in-flight micro-batches, offload, temporaries) and the data-parallel
/// gradient reduction of each chunk, which starts when the chunk's last backward ends.
/// The loop is branch-free: everything that depends on the op's kind (forward/backward, first/last stage) is
/// looked up in small per-kind tables. No allocation (beyond a new schedule shape): scratch is per thread.
/// </summary>
public static class PipelineSimulator
{
    [ThreadStatic] private static double[]? slotScratch;
    [ThreadStatic] private static double[]? rankScratch;

    public static void Run(in PipelineCosts k, ScheduleResult result)
    {
        int p = k.P, v = k.V, m = k.M, stages = p * v, cells = m * stages;
        var order = ScheduleOrder.For(p, v, m).Ops;

        // Per kind of op: duration, p2p delay on its input, bytes kept before / released after, temporaries,
        // offload stall, and time its rank waits for its own send.
        Span<double> duration = stackalloc double[ScheduleOrder.Kinds];
        Span<double> inputDelay = stackalloc double[ScheduleOrder.Kinds];
        Span<double> addBefore = stackalloc double[ScheduleOrder.Kinds];
        Span<double> removeAfter = stackalloc double[ScheduleOrder.Kinds];
        Span<double> transient = stackalloc double[ScheduleOrder.Kinds];
        Span<double> stall = stackalloc double[ScheduleOrder.Kinds];
        Span<double> sendWait = stackalloc double[ScheduleOrder.Kinds];
        for (int kind = 0; kind < ScheduleOrder.Kinds; kind++)
        {
            bool forward = (kind & ScheduleOrder.ForwardBit) != 0;
            bool first = (kind & ScheduleOrder.FirstBit) != 0, last = (kind & ScheduleOrder.LastBit) != 0;
            double work = forward
                ? k.ChunkForward + (first ? k.FirstForwardExtra : 0) + (last ? k.LastForwardExtra : 0)
                : k.ChunkBackward + (first ? k.FirstBackwardExtra : 0) + (last ? k.LastBackwardExtra : 0);
            double bytes = k.ChunkActivations + (first ? k.FirstExtraActivations : 0) + (last ? k.LastExtraActivations : 0);
            // Megatron-Kwai offloads alpha of a chunk's activations after its forward and reloads them before its
            // backward, overlapped with compute; the last stage's last chunk is not offloaded.
            double offload = k.OffloadRatio > 0 && !last ? k.OffloadRatio * bytes : 0;
            double busy = offload > 0 ? Math.Max(work, k.OffloadTransfer) : work;
            duration[kind] = busy;
            stall[kind] = busy - work;
            bool receives = forward ? !first : !last;
            bool sends = forward ? !last : !first;
            inputDelay[kind] = receives ? k.P2p : 0;
            sendWait[kind] = sends && !k.P2pOverlapped ? k.P2p : 0;
            addBefore[kind] = forward ? bytes : offload;
            removeAfter[kind] = forward ? offload : bytes;
            transient[kind] = (forward ? 0 : k.BackwardTransient)
                              + (last ? (forward ? k.LastForwardTransient : k.LastBackwardTransient) : 0);
        }

        var slots = Rent(ref slotScratch, 1 + 2 * cells);
        slots[0] = 0;
        var rs = Rent(ref rankScratch, 2 * p);
        var clock = rs.AsSpan(0, p);
        var live = rs.AsSpan(p, p);
        clock.Clear(); live.Clear();
        var peaks = result.ActivationPeak;
        var stalls = result.OffloadStall;
        var blocked = result.P2pBusy;
        Array.Clear(peaks); Array.Clear(stalls); Array.Clear(blocked);

        foreach (var op in order)
        {
            int r = op.Rank, kind = op.Kind;
            double ready = slots[op.Input] + inputDelay[kind];
            double end = Math.Max(clock[r], ready) + duration[kind];
            slots[op.Output] = end;
            clock[r] = end + sendWait[kind];
            double lv = live[r] + addBefore[kind];
            peaks[r] = Math.Max(peaks[r], lv + transient[kind]);
            live[r] = lv - removeAfter[kind];
        }

        for (int r = 0; r < p; r++)
        {
            result.ComputeEnd[r] = clock[r];
            // Every rank runs m forwards and m backwards of each of its chunks: stalls and send waits add up per kind.
            for (int chunk = 0; chunk < v; chunk++)
            {
                int stage = chunk * p + r;
                int bits = (stage == 0 ? ScheduleOrder.FirstBit : 0) | (stage == stages - 1 ? ScheduleOrder.LastBit : 0);
                stalls[r] += m * (stall[bits] + stall[bits | ScheduleOrder.ForwardBit]);
                blocked[r] += m * (sendWait[bits] + sendWait[bits | ScheduleOrder.ForwardBit]);
            }
            // Gradient reduction of each chunk on the data-parallel stream, in the order chunks become final
            // (backward runs chunks from last to first): when the backward of the last micro-batch ends.
            double stream = k.GradientReduceOverlapped ? 0 : clock[r];
            for (int chunk = v - 1; chunk >= 0; chunk--)
            {
                int stage = chunk * p + r;
                double reduce = k.ChunkGradientReduce
                    + (stage == 0 ? k.FirstExtraGradientReduce : 0)
                    + (stage == stages - 1 ? k.LastExtraGradientReduce : 0);
                double final = slots[ScheduleOrder.Slot((m - 1) * stages + stage, false, cells)];
                stream = Math.Max(stream, k.GradientReduceOverlapped ? final : 0) + reduce;
            }
            result.Finish[r] = Math.Max(clock[r], stream) + k.Rank(r).GradientReduceAfter;
        }
    }

    private static double[] Rent(ref double[]? buffer, int size)
    {
        if (buffer is null || buffer.Length < size) buffer = new double[Math.Max(size, 64)];
        return buffer;
    }
}
