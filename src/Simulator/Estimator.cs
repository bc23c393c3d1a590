using Harness.Simulator.Costs;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Simulator;

/// <summary>A configuration the simulator cannot estimate, with every reason in words.</summary>
public sealed class InvalidConfigException(IReadOnlyList<string> reasons)
    : ArgumentException(string.Join(" ", reasons))
{
    public IReadOnlyList<string> Reasons { get; } = reasons;
}

/// <summary>
/// The simulator's entry point: one training iteration of (model, cluster, config), from the per-layer costs
/// (src/Simulator/Costs) through the pipeline schedule (src/Simulator/Schedule) to a <see cref="StepEstimate"/>.
/// Step = slowest rank's pipeline (with its exposed gradient reduction; ZeRO 2 and 3's per-micro-batch collectives inside
/// its forwards and backwards) + optimizer step + weight all-gather.
/// </summary>
public static class Estimator
{
    /// <summary>Every reason (model, cluster, config) cannot be estimated; empty when it can.</summary>
    public static IReadOnlyList<string> Validate(ModelSpec model, ClusterSpec cluster, RunDescription config)
    {
        var reasons = new List<string>(model.Validate());
        if (reasons.Count > 0) return reasons;
        if (cluster.WorldSize < 1) reasons.Add($"the cluster has {cluster.WorldSize} GPUs; it needs at least 1.");
        if (cluster.GpusPerNode < 1) reasons.Add($"--gpus-per-node is {cluster.GpusPerNode}; it must be at least 1.");
        reasons.AddRange(config.Validate(model, cluster.WorldSize));
        if (AttentionKernels.Unavailable(config, cluster.Gpu) is string attention) reasons.Add(attention);
        return reasons;
    }

    /// <summary>Simulates the schedule stage by stage. Throws <see cref="InvalidConfigException"/> for an invalid config.</summary>
    public static StepEstimate Estimate(ModelSpec model, ClusterSpec cluster, RunDescription config,
        AttentionFlopCounting counting = AttentionFlopCounting.Causal)
    {
        var reasons = Validate(model, cluster, config);
        if (reasons.Count > 0) throw new InvalidConfigException(reasons);
        var k = PipelineCosts.Build(model, cluster, config);
        var run = ScheduleResult.Allocate(k.P);
        PipelineSimulator.Run(k, run);

        int critical = 0, afterRank = 0;
        double optimizerPhase = 0;
        for (int r = 0; r < k.P; r++)
        {
            if (run.Finish[r] > run.Finish[critical]) critical = r;
            var rc = k.Rank(r);
            if (rc.Optimizer + rc.ParameterGather > optimizerPhase) { optimizerPhase = rc.Optimizer + rc.ParameterGather; afterRank = r; }
        }
        double step = run.Finish[critical] + optimizerPhase;

        // Breakdown on the critical rank: its busy time by kind, the rest of its pipeline span is bubble.
        int c = critical;
        var chunks = k.RankChunks(c);
        double tp = k.M * (chunks.TensorParallel + (c == 0 ? k.FirstExtraTensorParallel : 0) + (c == k.P - 1 ? k.LastExtraTensorParallel : 0));
        double cp = k.M * chunks.ContextParallel;
        double recompute = k.M * chunks.Recompute;
        double zero = k.M * (chunks.DataParallel + (c == 0 ? k.FirstExtraDataParallel : 0) + (c == k.P - 1 ? k.LastExtraDataParallel : 0));
        double compute = k.M * k.RankWorkPerMicroBatch(c) - tp - cp - recompute - zero;
        double busy = compute + recompute + tp + cp + zero + run.OffloadStall[c] + run.P2pBusy[c];
        double bubble = Math.Max(0, run.ComputeEnd[c] - busy); // rounding leaves -1e-15 where there is none
        var after = k.Rank(afterRank);
        var time = new TimeBreakdown(compute, recompute, tp, cp, run.P2pBusy[c],
            zero + run.Finish[c] - run.ComputeEnd[c] + after.ParameterGather, bubble, after.Optimizer, run.OffloadStall[c]);

        var stages = new StageMemory[k.P];
        int peakStage = 0;
        for (int r = 0; r < k.P; r++)
        {
            var state = k.Rank(r).State;
            double buffers = BuffersAtPeak(k, r);
            stages[r] = new StageMemory(r, new MemoryBreakdown(state.Weights, state.Gradients, state.Optimizer,
                run.ActivationPeak[r] - buffers, buffers));
            if (stages[r].Memory.Total > stages[peakStage].Memory.Total) peakStage = r;
        }
        var memory = stages[peakStage].Memory;
        long peak = (long)Math.Ceiling(memory.Total);
        long reserved = (long)Math.Ceiling(stages.Max(s => MemoryBudget.ReservedBytes(s.Memory, config)));
        return Summarize(model, cluster, config, counting, step, peak, reserved, bubble, critical, peakStage, time, memory, stages);
    }

    /// <summary>
    /// The closed-form estimate for screening: exact where every chunk is alike; no breakdown and no allocation.
    /// The caller passes a configuration that <see cref="Validate"/> accepts.
    /// </summary>
    public static ScreeningEstimate EstimateClosedForm(ModelSpec model, ClusterSpec cluster, RunDescription config,
        AttentionFlopCounting counting = AttentionFlopCounting.Causal)
    {
        var k = PipelineCosts.Build(model, cluster, config);
        double pipeline = ClosedForm.PipelineTime(k);
        // The ranks that can be slowest or fullest: the first and the last, and where virtual stages differ the first middle
        // rank (its chunks differ from theirs; of the middle ranks it holds the most micro-batches in flight).
        double dp = 0, after = 0, memory = 0, reserved = 0;
        foreach (int r in (ReadOnlySpan<int>)[0, k.Uneven ? Math.Min(1, k.P - 1) : 0, k.P - 1])
        {
            var rc = k.Rank(r);
            double activations = ClosedForm.ActivationPeak(k, r);
            dp = Math.Max(dp, ClosedForm.ExposedGradientReduce(k, r));
            after = Math.Max(after, rc.Optimizer + rc.ParameterGather);
            memory = Math.Max(memory, rc.State.Total + activations);
            reserved = Math.Max(reserved, MemoryBudget.ReservedBytes(rc.State.Total, activations, config));
        }
        double step = pipeline + dp + after;
        double tokens = Tokens(model, config) / step / cluster.WorldSize;
        double mfu = tokens * Flops.ModelFlopsPerToken(model, counting) / cluster.Gpu.PeakFlops(config.Precision);
        return new ScreeningEstimate(step, tokens, mfu, memory, reserved, MemoryBudget.Fits(reserved, cluster.Gpu));
    }

    /// <summary>
    /// Lower bounds for pruning: no step is faster than its slowest rank's compute at the configured efficiency
    /// (no bubble, no communication, no optimizer), and no rank needs less than its weights, gradients and
    /// optimizer states.
    /// </summary>
    public static EstimateBounds Bounds(ModelSpec model, ClusterSpec cluster, RunDescription config)
    {
        var k = PipelineCosts.Build(model, cluster, config);
        double compute = k.M * Math.Max(k.RankChunks(Math.Min(1, k.P - 1)).Compute, Math.Max(k.RankChunks(0).Compute, k.RankChunks(k.P - 1).Compute));
        double state = Math.Max(k.Middle.State.Total, Math.Max(k.First.State.Total, k.Last.State.Total));
        return new EstimateBounds(compute, state);
    }

    private static double BuffersAtPeak(in PipelineCosts k, int rank) =>
        k.BackwardTransient + (rank == 0 ? k.FirstBackwardTransient : 0) + (rank == k.P - 1 ? k.LastBackwardTransient : 0);

    private static double Tokens(ModelSpec model, RunDescription config) => (double)config.GlobalBatch * model.SeqLength;

    private static StepEstimate Summarize(ModelSpec model, ClusterSpec cluster, RunDescription config,
        AttentionFlopCounting counting, double step, long peak, long reserved, double bubble, int critical, int peakStage,
        TimeBreakdown time, MemoryBreakdown memory, IReadOnlyList<StageMemory> stages)
    {
        double tokensPerGpu = Tokens(model, config) / step / cluster.WorldSize;
        double peakFlops = cluster.Gpu.PeakFlops(config.Precision);
        double modelFlops = tokensPerGpu * Flops.ModelFlopsPerToken(model, counting);
        double hardwareFlops = tokensPerGpu * Flops.HardwareFlopsPerToken(model, config, counting);
        return new StepEstimate(step, tokensPerGpu, modelFlops / 1e12, modelFlops / peakFlops, hardwareFlops / peakFlops,
            peak, cluster.Gpu.MemoryBytes, MemoryBudget.Fits(reserved, cluster.Gpu), bubble / step, critical, peakStage,
            time, memory, stages, reserved);
    }
}
