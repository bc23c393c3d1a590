namespace Harness.Simulator.Schedule;

/// <summary>
/// Simulates one iteration of Megatron's 1F1B (PipeDream-Flush) or interleaved 1F1B schedule op by op on every
/// pipeline rank (<see cref="ScheduleOrder"/> gives the ops in dependency order). An op starts when its rank is
/// free and its input has arrived: forward of micro-batch j on virtual stage k needs its forward on k−1 plus a
/// p2p transfer; backward on k needs the backward on k+1 plus a transfer (on the last stage, its own forward).
/// Durations differ by stage: the first virtual stage adds the embedding, the last the output layer and loss, and both
/// may hold their own number of layers (uneven stages, or the embedding or loss counted as a layer);
/// Megatron-Kwai's offload stretches an op to its host transfer when that is longer.
/// Also tracks activation memory per rank (in-flight micro-batches, offload, temporaries) and the data-parallel
/// gradient reduction of each chunk, which starts when the chunk's last backward ends.
/// The loop is branch-free: everything that depends on the op's kind (forward/backward, first/last stage) is
/// looked up in small per-kind tables. No allocation (beyond a new schedule shape): scratch is per thread.
/// The outcome is a function of the costs alone, and configurations that differ only where the costs do not (a
/// recomputation that saves nothing under the layout, the exchange a schedule's inputs do not see) have equal costs: the
/// outcomes of the thread's recent costs are kept and an equal one's replayed.
/// </summary>
public static class PipelineSimulator
{
    [ThreadStatic] private static double[]? slotScratch;
    [ThreadStatic] private static RankState[]? rankScratch;
    [ThreadStatic] private static Dictionary<PipelineCosts, ScheduleResult>? recent;

    /// <summary>Outcomes kept per thread: a search visits the configurations of one layout together, and those that share
    /// costs are among them; a few hundred bytes each.</summary>
    private const int RecentLimit = 1024;

    private readonly record struct KindCost(
        double Duration, double InputDelay, double SendWait, double AddBefore, double RemoveAfter, double Transient, double Stall);

    /// <summary>A rank while the schedule runs: when it is free, activation bytes held, their peak, time waited on its sends
    /// and on offload copies.</summary>
    private struct RankState
    {
        public double Clock, Live, Peak, SendWaits, Stalls;
    }

    public static void Run(in PipelineCosts k, ScheduleResult result)
    {
        recent ??= new();
        if (recent.TryGetValue(k, out var known))
        {
            known.CopyTo(result);
            return;
        }
        Simulate(k, result);
        if (recent.Count >= RecentLimit) recent.Clear();
        recent[k] = result.Copy(k.P);
    }

    private static void Simulate(in PipelineCosts k, ScheduleResult result)
    {
        int p = k.P, v = k.V, m = k.M, stages = p * v;
        var schedule = ScheduleOrder.For(p, v, m);
        var order = schedule.Ops;

        // Per kind of op: duration, p2p delay on its input, bytes kept before / released after, temporaries, offload stall,
        // and time its rank waits for its own send.
        Span<KindCost> kinds = stackalloc KindCost[ScheduleOrder.Kinds];
        for (int kind = 0; kind < ScheduleOrder.Kinds; kind++) kinds[kind] = Cost(k, kind);

        var slots = Rent(ref slotScratch, 1 + order.Length);
        slots[0] = 0;
        var ranks = rankScratch is { Length: var n } && n >= p ? rankScratch : rankScratch = new RankState[Math.Max(p, 16)];
        Array.Clear(ranks, 0, p);

        for (int i = 0; i < order.Length; i++)
        {
            var op = order[i];
            ref readonly var c = ref kinds[op.Kind];
            ref var rank = ref ranks[op.Rank];
            double ready = slots[op.Input] + c.InputDelay;
            double end = (rank.Clock > ready ? rank.Clock : ready) + c.Duration;
            slots[i + 1] = end;
            rank.Clock = end + c.SendWait;
            rank.SendWaits += c.SendWait;
            rank.Stalls += c.Stall;
            double live = rank.Live + c.AddBefore, high = live + c.Transient;
            rank.Peak = high > rank.Peak ? high : rank.Peak;
            rank.Live = live - c.RemoveAfter;
        }

        var stalls = result.OffloadStall;
        var blocked = result.P2pBusy;
        for (int r = 0; r < p; r++)
        {
            double clock = ranks[r].Clock;
            result.ComputeEnd[r] = clock;
            result.ActivationPeak[r] = ranks[r].Peak;
            stalls[r] = ranks[r].Stalls;
            blocked[r] = ranks[r].SendWaits;
            // Gradient reduction of each chunk on the data-parallel stream, in the order chunks become final
            // (backward runs chunks from last to first). Overlapped (PyTorch DDP, Megatron's --overlap-grad-reduce), the
            // gradients are reduced in buckets as the chunk's final backward runs through its layers: bucket i of L is
            // ready at start + i/L of that backward, so the stream ends at the latest of (previous end + all of it), (the
            // first layer's gradients + all of it) and (the backward's end + the last layer's share).
            double stream = k.GradientReduceOverlapped ? 0 : clock, total = 0;
            for (int chunk = v - 1; chunk >= 0; chunk--)
            {
                int stage = chunk * p + r;
                var chunkCosts = k.ChunkOf(r, chunk);
                double reduce = chunkCosts.GradientReduce
                    + (stage == 0 ? k.FirstExtraGradientReduce : 0)
                    + (stage == stages - 1 ? k.LastExtraGradientReduce : 0);
                total += reduce;
                if (!k.GradientReduceOverlapped) { stream += reduce; continue; }
                int bits = (stage == 0 ? ScheduleOrder.FirstBit : 0) | (stage == stages - 1 ? ScheduleOrder.LastBit : 0);
                double final = slots[schedule.FinalBackwardSlot[stage]];
                double start = final - kinds[bits].Duration, layers = Math.Max(1, chunkCosts.Layers);
                stream = Math.Max(stream + reduce, Math.Max(start + (final - start) / layers + reduce, final + reduce / layers));
            }
            // What hides behind the backward slows it by NCCL's share of the SMs, as overlapped TP and CP collectives do.
            double hidden = k.GradientReduceOverlapped ? total - Math.Max(0, stream - clock) : 0;
            result.Finish[r] = Math.Max(clock + PipelineCosts.NcclSmShare * hidden, stream) + k.Rank(r).GradientReduceAfter;
        }
    }

    /// <summary>One kind of op: the first and last virtual stages' chunks may hold their own number of layers.</summary>
    private static KindCost Cost(in PipelineCosts k, int kind)
    {
        bool forward = (kind & ScheduleOrder.ForwardBit) != 0;
        bool first = (kind & ScheduleOrder.FirstBit) != 0, last = (kind & ScheduleOrder.LastBit) != 0;
        var chunk = first ? k.FirstStageChunk ?? k.Chunk : last ? k.LastStageChunk ?? k.Chunk : k.Chunk;
        bool blocking = (kind & ScheduleOrder.BlockingBit) != 0;
        double work = forward
            ? chunk.Forward + (first ? k.FirstForwardExtra : 0) + (last ? k.LastForwardExtra : 0)
            : chunk.Backward + (first ? k.FirstBackwardExtra : 0) + (last ? k.LastBackwardExtra : 0);
        double bytes = chunk.Activations + (first ? k.FirstExtraActivations : 0) + (last ? k.LastExtraActivations : 0);
        // Megatron-Kwai offloads part of a chunk's activations after its forward and reloads it before its
        // backward, overlapped with compute; the last stage's last chunk is not offloaded.
        double offload = k.OffloadRatio > 0 && !last ? chunk.Offloaded - chunk.Stranded : 0;
        // Megatron-Kwai's schedule (ATC'24 artifact, schedules.py) makes the compute stream wait for the copies at
        // different points by phase: in the warm-up each forward waits for the previous forward's offload, in the
        // cool-down each backward for the next one's reload; in the interleaved steady state one offload and one
        // reload (PCIe is full duplex) run from one backward's start to the next's, across a forward and a backward.
        bool pairs = k.V > 1 && !blocking;
        double busy = (offload <= 0 ? work
            : !pairs ? Math.Max(work, chunk.OffloadTransfer)
            : forward ? work : Math.Max(work, chunk.OffloadTransfer - chunk.Forward))
            + (forward ? k.CpuOffloadForwardStall : k.CpuOffloadBackwardStall);
        bool receives = forward ? !first : !last;
        bool sends = forward ? !last : !first;
        return new KindCost(
            Duration: busy,
            InputDelay: receives ? k.P2p : 0,
            SendWait: sends && (blocking || !k.P2pOverlapped) ? k.P2p : 0,
            AddBefore: forward ? bytes : offload,
            RemoveAfter: forward ? offload : bytes,
            Transient: (forward ? 0 : k.BackwardTransient + (first ? k.FirstBackwardTransient : 0)) + (last ? (forward ? k.LastForwardTransient : k.LastBackwardTransient) : 0),
            Stall: busy - work);
    }

    private static double[] Rent(ref double[]? buffer, int size)
    {
        if (buffer is null || buffer.Length < size) buffer = new double[Math.Max(size, 64)];
        return buffer;
    }
}
