namespace Harness.Simulator.Schedule;

/// <summary>One op of a pipeline schedule: forward or backward of one micro-batch on one virtual stage.</summary>
/// <param name="Input">Finish-time slot of the op that produces this op's input: the previous stage's forward,
/// the next stage's backward, or on the last stage its own forward; slot 0 (time zero) for the first stage's
/// forward. The i-th op of <see cref="ScheduleOrder.Ops"/> writes its finish time to slot i + 1.</param>
/// <param name="Kind">Bits: 1 forward, 2 first virtual stage, 4 last virtual stage, 8 the rank waits for this op's p2p
/// exchange before its next op even when p2p overlaps compute (<see cref="ScheduleOrder"/> constants).</param>
public readonly record struct PipelineOp(int Input, int Rank, int Kind);

/// <summary>
/// Every op of one iteration in an order in which each op comes after the ops it depends on: its
/// predecessor on the same rank (Megatron's per-rank order) and its input from the neighbouring stage.
/// Which op may run next depends only on which ops have run, not on how long they took, so the order is a
/// function of (p, v, m) alone: computed once per shape and replayed for every configuration of that shape.
/// </summary>
public sealed class ScheduleOrder
{
    public int P { get; }
    public int V { get; }
    public int M { get; }
    public PipelineOp[] Ops { get; }

    /// <summary>Per virtual stage, the slot of its last backward (the last micro-batch): its gradients are final.</summary>
    public int[] FinalBackwardSlot { get; }

    public const int ForwardBit = 1, FirstBit = 2, LastBit = 4, BlockingBit = 8, Kinds = 16;

    /// <summary>Finish-time slots while the order is built: 0 is time zero, then forward cells, then backward
    /// cells (cell = micro-batch·(p·v) + virtual stage). The final order renumbers them by position.</summary>
    private static int Slot(int cell, bool forward, int cells) => 1 + cell + (forward ? 0 : cells);

    [ThreadStatic] private static Dictionary<(int, int, int), ScheduleOrder>? cache;
    [ThreadStatic] private static long cachedOps;

    /// <summary>Ops kept per thread (12 bytes each plus the slot map: ~64 MB), so a search stays within that per thread
    /// however many pipeline shapes it visits, and holds every shape of Llama 3 405B's search on 16,384 GPUs (about 2M ops:
    /// rebuilding them would cost it a tenth of its time).</summary>
    private const long CacheLimitOps = 1 << 22;

    private ScheduleOrder(int p, int v, int m, PipelineOp[] ops, int[] finalBackwardSlot) =>
        (P, V, M, Ops, FinalBackwardSlot) = (p, v, m, ops, finalBackwardSlot);

    /// <summary>The order for p ranks, v chunks per rank and m micro-batches (cached per thread).</summary>
    public static ScheduleOrder For(int p, int v, int m)
    {
        cache ??= new();
        if (cache.TryGetValue((p, v, m), out var order)) return order;
        order = Build(p, v, m);
        if (cachedOps + order.Ops.Length > CacheLimitOps) { cache.Clear(); cachedOps = 0; }
        cache[(p, v, m)] = order;
        cachedOps += order.Ops.Length;
        return order;
    }

    /// <summary>
    /// Whether rank r waits for the p2p exchange that follows this op before it starts its next op, even with
    /// --overlap-p2p-communication. Megatron's interleaved schedule (schedules.py, Jan 2024) overlaps an exchange only
    /// in the steady state, where a forward's exchange is waited for after the next backward and vice versa. In the
    /// warm-up each iteration waits for the previous forward's exchange before its forward (the last warm-up
    /// exchange before the first steady-state forward); the last steady-state backward's exchange is waited for
    /// before the cool-down, and every cool-down exchange is blocking (send_backward_recv_backward without
    /// overlap), the last one before the rank's backward pass ends. The non-interleaved 1F1B schedule has no
    /// overlapped variant: every exchange blocks.
    /// </summary>
    public static bool BlocksOnItsExchange(int p, int v, int m, int rank, bool forward, int index)
    {
        if (v == 1) return true;
        int warmup = Warmup(p, v, m, rank);
        return forward ? index < warmup : index >= m * v - warmup - 1;
    }

    /// <summary>Forward ops a rank runs before its first backward (Megatron's num_warmup_microbatches).</summary>
    public static int Warmup(int p, int v, int m, int rank) =>
        v == 1 ? Math.Min(p - rank - 1, m) : Math.Min((p - rank - 1) * 2 + (v - 1) * p, m * v);

    /// <summary>
    /// Megatron's schedules (schedules.py): rank r runs Warmup(r) forwards, then alternates one forward and one
    /// backward, then the remaining backwards. Interleaved, the i-th forward takes micro-batches in groups of p
    /// through chunk 0, 1, ..., v−1 (the i-th backward through v−1, ..., 0). Ranks run until an input is
    /// missing; the rank producing it wakes them (a worklist).
    /// </summary>
    private static ScheduleOrder Build(int p, int v, int m)
    {
        int stages = p * v, n = m * v, cells = m * stages;
        var (fCell, fStage) = Sequence(p, v, m, backward: false);
        var (bCell, bStage) = Sequence(p, v, m, backward: true);
        var forwardDone = new bool[cells];
        var backwardDone = new bool[cells];
        var ops = new PipelineOp[2 * n * p];
        var outputs = new int[ops.Length];
        var nf = new int[p];
        var nb = new int[p];
        var queued = new bool[p];
        var work = new Stack<int>();
        for (int r = p - 1; r >= 0; r--) { work.Push(r); queued[r] = true; }
        int count = 0;
        while (work.Count > 0)
        {
            int r = work.Pop();
            queued[r] = false;
            int warmup = Warmup(p, v, m, r);
            while (nb[r] < n)
            {
                bool forward = nf[r] < n && nf[r] - nb[r] <= warmup;
                int cell = (forward ? fCell[nf[r]] : bCell[nb[r]]) + r;
                int stage = (forward ? fStage[nf[r]] : bStage[nb[r]]) + r;
                bool ready = forward
                    ? stage == 0 || forwardDone[cell - 1]
                    : stage == stages - 1 ? forwardDone[cell] : backwardDone[cell + 1];
                if (!ready) break;
                bool first = stage == 0, last = stage == stages - 1;
                int input = forward
                    ? first ? 0 : Slot(cell - 1, true, cells)
                    : last ? Slot(cell, true, cells) : Slot(cell + 1, false, cells);
                int kind = (forward ? ForwardBit : 0) | (first ? FirstBit : 0) | (last ? LastBit : 0)
                           | (BlocksOnItsExchange(p, v, m, r, forward, forward ? nf[r] : nb[r]) ? BlockingBit : 0);
                outputs[count] = Slot(cell, forward, cells);
                ops[count++] = new PipelineOp(input, r, kind);
                int consumer;
                if (forward) { forwardDone[cell] = true; nf[r]++; consumer = stage == stages - 1 ? -1 : (r + 1) % p; }
                else { backwardDone[cell] = true; nb[r]++; consumer = stage == 0 ? -1 : (r + p - 1) % p; }
                if (consumer >= 0 && !queued[consumer]) { work.Push(consumer); queued[consumer] = true; }
            }
        }
        if (count != ops.Length)
            throw new InvalidOperationException($"pipeline schedule p {p} v {v} m {m} deadlocked: the op order is inconsistent.");
        var sorted = InterleaveRanks(ops, outputs, cells);
        // Renumber slots by position, so the loop writes finish times in sequence and reads recent ones.
        var position = new int[1 + 2 * cells];
        for (int i = 0; i < sorted.Length; i++) position[outputs[sorted[i]]] = i + 1;
        var final = sorted.Select(i => ops[i] with { Input = position[ops[i].Input] }).ToArray();
        var finalBackward = new int[stages];
        for (int stage = 0; stage < stages; stage++) finalBackward[stage] = position[Slot((m - 1) * stages + stage, false, cells)];
        return new ScheduleOrder(p, v, m, final, finalBackward);
    }

    /// <summary>
    /// Reorders the ops by their start time in the uniform schedule (forward 1, backward 2, free p2p), ranks in
    /// turn at equal times. Still a dependency order (an op starts after its inputs end), and ops next to each
    /// other are mostly on different ranks, so the simulator's loop has independent work to overlap.
    /// </summary>
    private static int[] InterleaveRanks(PipelineOp[] ops, int[] outputs, int cells)
    {
        var finish = new double[1 + 2 * cells];
        var clock = new double[ops.Max(o => o.Rank) + 1];
        var start = new double[ops.Length];
        for (int i = 0; i < ops.Length; i++)
        {
            var op = ops[i];
            start[i] = Math.Max(clock[op.Rank], finish[op.Input]);
            finish[outputs[i]] = clock[op.Rank] = start[i] + ((op.Kind & ForwardBit) != 0 ? 1 : 2);
        }
        var index = Enumerable.Range(0, ops.Length).ToArray();
        Array.Sort(index, (a, b) => start[a] != start[b] ? start[a].CompareTo(start[b]) : ops[a].Rank.CompareTo(ops[b].Rank));
        return index;
    }

    /// <summary>The i-th forward (or backward) op of any rank: its cell and stage, less the rank.</summary>
    private static (int[] Cell, int[] Stage) Sequence(int p, int v, int m, bool backward)
    {
        int stages = p * v, n = m * v;
        var cell = new int[n];
        var stage = new int[n];
        if (v == 1)
        {
            for (int i = 0; i < m; i++) cell[i] = i * stages;
            return (cell, stage);
        }
        int j = 0;
        for (int group = 0; group < m / p; group++)
            for (int chunk = 0; chunk < v; chunk++)
                for (int lane = 0; lane < p; lane++, j++)
                {
                    stage[j] = (backward ? v - 1 - chunk : chunk) * p;
                    cell[j] = (group * p + lane) * stages + stage[j];
                }
        return (cell, stage);
    }
}
