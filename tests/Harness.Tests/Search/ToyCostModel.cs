using Harness.Search;
using Harness.Simulator.Specs;

namespace Harness.Tests.Search;

/// <summary>
/// A small analytic cost model for testing the search engine alone (the real one is the simulator): it has the
/// properties <see cref="ISearchCostModel"/> states, trade-offs in every dimension (recomputation and offload
/// buy memory with time, TP and CP cost communication, ZeRO stages trade memory for traffic), and it is cheap
/// enough to brute-force.
/// </summary>
internal sealed class ToyCostModel : ISearchCostModel
{
    private static double ZeroBytesPerParameter(int zero, int dp) => zero switch
    {
        0 => 18,
        1 => 6 + 12.0 / dp,
        2 => 2 + 16.0 / dp,
        _ => 18.0 / dp,
    };

    public long StaticMemoryLowerBound(ModelSpec m, ClusterSpec cluster, RunDescription c) =>
        (long)((double)m.ParametersPerLayer * m.NumLayers / c.PipelineParallel / c.TensorParallel * ZeroBytesPerParameter(c.ZeroStage, c.DataParallel));

    // Compute at peak with the recomputation's extra work; the weights and optimizer with the activations that
    // survive the largest offload (the model below keeps 10% of them at alpha 1).
    public CostBounds Bounds(ModelSpec m, ClusterSpec cluster, RunDescription c)
    {
        var (recomputeTime, _) = Recompute(c.RecomputeOrNone, ChunkLayers(m, c));
        return new CostBounds(ComputeBound.StepTimeLowerBound(m, cluster, c) * (1 + recomputeTime),
            StaticMemoryLowerBound(m, cluster, c) + (long)(0.0999 * Activations(m, cluster, c)));
    }

    private static (double Time, double Memory) Recompute(RecomputeSpec r, int chunkLayers)
    {
        if (r.Granularity == RecomputeGranularity.Full)
            return r.Method == RecomputeMethod.Uniform
                ? (0.33, 0.1 + 0.03 * r.NumLayers)
                : (0.33 * r.NumLayers / chunkLayers, 1 - 0.85 * r.NumLayers / chunkLayers);
        double t = 0, mem = 1;
        if (r.Granularity == RecomputeGranularity.Selective) { t += 0.05; mem *= 0.7; }
        if (r.NormOutputs) { t += 0.02; mem *= 0.9; }
        if (r.MlpActivation) { t += 0.03; mem *= 0.85; }
        return (t, mem);
    }

    /// <summary>The smallest model chunk's layers (the block method recomputes at most these).</summary>
    private static int ChunkLayers(ModelSpec m, RunDescription c) => c.ChunkSizes(m).Min();

    private static double Activations(ModelSpec m, ClusterSpec cluster, RunDescription c)
    {
        var (_, activationFactor) = Recompute(c.RecomputeOrNone, ChunkLayers(m, c));
        double v = c.VirtualStages(m);
        double inFlight = c.PipelineParallel * (1 + (c.PipelineParallel - 1) / (c.PipelineParallel * v));
        return 40.0 * c.MicroBatch * m.SeqLength / c.ContextParallel * m.HiddenSize
            / (c.SequenceParallel ? c.TensorParallel : Math.Sqrt(c.TensorParallel))
            * m.NumLayers / c.PipelineParallel * Math.Min(inFlight, c.NumMicroBatches) * activationFactor;
    }

    public double Screen(ModelSpec m, ClusterSpec cluster, RunDescription c) => Evaluate(m, cluster, c).StepTimeSeconds;

    public CostPoint Evaluate(ModelSpec m, ClusterSpec cluster, RunDescription c)
    {
        double compute = ComputeBound.StepTimeLowerBound(m, cluster, c);
        var (recomputeTime, _) = Recompute(c.RecomputeOrNone, ChunkLayers(m, c));
        double tpComm = 0.06 * Math.Log2(c.TensorParallel) * (c.TensorParallel > cluster.GpusPerNode ? 5 : 1) * (c.SequenceParallel ? 0.9 : 1) * c.SyncFactor;
        double cpComm = 0.04 * Math.Log2(c.ContextParallel);
        double zeroComm = c.ZeroStage switch { 0 => 0.02, 1 => 0.01, 2 => 0.015, _ => 0.05 };
        double activations = Activations(m, cluster, c);
        double offloadStall = Math.Max(0, c.OffloadRatio - 0.3) * activations / cluster.Gpu.HostLinkBytesPerSecond;
        double time = compute * (1 + recomputeTime + tpComm + cpComm + zeroComm) + offloadStall;
        long memory = StaticMemoryLowerBound(m, cluster, c) + (long)(activations * (1 - 0.9 * c.OffloadRatio));
        double tokensPerGpu = (double)c.GlobalBatch * m.SeqLength / time / cluster.WorldSize;
        return new CostPoint(time, memory, tokensPerGpu, compute / time, recomputeTime > tpComm ? "recompute" : "compute");
    }
}
