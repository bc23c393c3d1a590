using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// The compute-only lower bound on a layout's step time, from the one FLOP counter and the GPU's peak: no
/// evaluation needed. Follow the dependency chain of the 1F1B schedules (plain and interleaved): the last
/// pipeline rank cannot start before micro-batch 1 has gone forward through one model chunk on each of the
/// p−1 ranks before it, then it does all its own work, and the step cannot end before the last micro-batch's
/// gradient has gone back through one chunk on each of those p−1 ranks (Narayanan et al. 2021, §2.2: the
/// bubble is (p−1) chunk passes). So T ≥ [last rank's layer FLOPs + forward + backward of one chunk of each of the
/// p−1 other ranks on one micro-batch] / peak (their own lengths with uneven stages). The output layer is left out (a valid, slightly looser bound); recomputation,
/// communication and efficiency below peak only add, so this bounds every ZeRO stage, recomputation and
/// offload ratio of the layout.
/// </summary>
public static class ComputeBound
{
    public static double StepTimeLowerBound(ModelSpec model, ClusterSpec cluster, RunDescription c)
    {
        // The fastest dense peak of the GPU, whatever the precision: a valid bound for all of them.
        double peak = Math.Max(cluster.Gpu.PeakFp16Flops, cluster.Gpu.PeakBf16Flops);
        // Causal counting: the smaller of the two conventions, so the bound holds for either. Backward is 2x forward.
        double layerFlopsPerToken = 3 * Flops.LayerForwardPerToken(model, AttentionFlopCounting.Causal);
        // The last pipeline rank holds v chunks of its layers (L/p with even stages); it sees GBS·s/dp tokens split over
        // tp and cp ranks (world = dp·tp·p·cp).
        int p = c.PipelineParallel;
        double lastRankLayers = c.LayersOnRank(model, p - 1);
        double lastRankFlops = layerFlopsPerToken * lastRankLayers * p * c.GlobalBatch * model.SeqLength / cluster.WorldSize;
        double chunkTokens = (double)c.MicroBatch * model.SeqLength / c.ContextParallel;
        double fillLayers = 0;
        for (int r = 0; r < p - 1; r++) fillLayers += c.LayersInChunk(model, r, 0);
        return (lastRankFlops + layerFlopsPerToken * fillLayers * chunkTokens / c.TensorParallel) / peak;
    }
}
