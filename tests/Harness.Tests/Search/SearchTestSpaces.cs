using Harness.Search;
using Harness.Simulator.Specs;

namespace Harness.Tests.Search;

/// <summary>Small models and clusters whose whole space can be brute-forced in a test.</summary>
internal static class SearchTestSpaces
{
    /// <summary>GPT-style (GeLU, LayerNorm, MHA): Kwai's SwiGLU recompute does not apply.</summary>
    public static ModelSpec TinyGpt { get; } = new("tiny-gpt", 4, 256, 8, 8, 1024, 1000, 128,
        Activation.Gelu, Normalization.LayerNorm, PositionEmbedding.Learned, TiedEmbeddings: true, HiddenDropout: 0.1, AttentionDropout: 0.1);

    /// <summary>Llama-style with GQA (2 KV groups) and 6 layers: uneven divisors, TP capped by the groups.</summary>
    public static ModelSpec TinyLlama { get; } = new("tiny-llama", 6, 256, 8, 2, 768, 1000, 96,
        Activation.SwiGlu, Normalization.RmsNorm, PositionEmbedding.Rotary, TiedEmbeddings: false, HiddenDropout: 0, AttentionDropout: 0);

    /// <summary>A GPU with little memory, so memory limits bite on the tiny models: 40 MiB usable after the
    /// simulator's 2 GiB outside the allocator and 10% fragmentation.</summary>
    public static GpuSpec TinyGpu { get; } = GpuPresets.All["h800"] with { Name = "tiny", MemoryBytes = (2L << 30) + (44L << 20) };

    public static SearchSpace Space(ModelSpec model, int world, int globalBatch, SearchConstraints? c = null, int gpusPerNode = 4) =>
        new(model, new ClusterSpec(TinyGpu, world, gpusPerNode), globalBatch, c ?? new SearchConstraints { OffloadStep = 0.25 });

    /// <summary>
    /// Every combination of the configuration's fields that could be valid (world size = dp·tp·pp·cp, every
    /// interleaving, micro-batch, recomputation, offload ratio, ZeRO stage and p; the even split and the uneven ones the
    /// search tries, <see cref="SearchedSplit"/>), filtered by RunDescription.Validate alone: the definition the
    /// enumerator must match.
    /// </summary>
    public static List<RunDescription> ValidByValidate(SearchSpace s)
    {
        var m = s.Model;
        int world = s.Cluster.WorldSize;
        var recomputes = new List<RecomputeSpec>();
        foreach (var g in new[] { RecomputeGranularity.None, RecomputeGranularity.Selective })
            foreach (bool norm in new[] { false, true })
                foreach (bool act in new[] { false, true })
                    recomputes.Add(new RecomputeSpec(g, NormOutputs: norm, MlpActivation: act));
        foreach (var method in new[] { RecomputeMethod.Uniform, RecomputeMethod.Block })
            for (int n = 1; n <= m.NumLayers; n++)
                recomputes.Add(new RecomputeSpec(RecomputeGranularity.Full, method, n));
        var result = new List<RunDescription>();
        for (int tp = 1; tp <= world; tp++)
            for (int pp = 1; pp <= world / tp; pp++)
                for (int cp = 1; cp <= world / (tp * pp); cp++)
                {
                    if (world % (tp * pp * cp) != 0) continue;
                    int dp = world / (tp * pp * cp);
                    var layers = new int?[] { null }.Concat(Enumerable.Range(1, m.NumLayers).Select(i => (int?)i)).ToArray();
                    // Splits Megatron accepts without interleaving, or with the ends counted (which need it to be searched).
                    var splits = (from f in layers from last in layers from e in new[] { false, true } from lo in new[] { false, true }
                                  select new RunDescription(PipelineParallel: pp, LayersInFirstPipelineStage: f, LayersInLastPipelineStage: last,
                                      AccountForEmbeddingInPipelineSplit: e, AccountForLossInPipelineSplit: lo))
                        .Where(split => split.AccountsForEndsInPipelineSplit || split.Validate(m, pp).Count == 0).ToList();
                    foreach (var split in splits)
                    // Without context parallelism there is no exchange to choose: Megatron's default stands.
                    foreach (var comm in cp == 1 ? [ContextParallelCommType.P2p] : Enum.GetValues<ContextParallelCommType>())
                    foreach (int? a2a in comm == ContextParallelCommType.A2aP2p ? Enumerable.Range(1, cp).Select(i => (int?)i) : [null])
                    foreach (int? l in layers)
                        foreach (bool sp in new[] { false, true })
                            for (int mb = 1; mb <= s.GlobalBatch; mb++)
                                foreach (var r in recomputes)
                                    foreach (double a in s.Constraints.OffloadGrid())
                                        for (int zero = 0; zero <= 3; zero++)
                                            foreach (double p in s.Constraints.SyncFactors)
                                            {
                                                var c = split with
                                                {
                                                    DataParallel = dp, TensorParallel = tp, LayersPerVirtualStage = l, ContextParallel = cp,
                                                    SequenceParallel = sp, MicroBatch = mb, GlobalBatch = s.GlobalBatch, Recompute = r,
                                                    OffloadRatio = a, ZeroStage = zero, SyncFactor = p, ContextParallelComm = comm, HierarchicalAllToAllSize = a2a,
                                                    Fsdp = s.Constraints.Implementation.Fsdp,
                                                    GradientAccumulationFusion = s.Constraints.Implementation.GradientAccumulationFusion,
                                                };
                                                if (SearchedSplit(m, c) && c.Validate(m, world).Count == 0) result.Add(c);
                                            }
                }
        return result;
    }

    /// <summary>
    /// Whether the search tries a split (PipelineSplits), restated for the tiny models, whose embedding and output layer weigh
    /// less than a layer (one layer of deficit): the even split; the embedding or loss counted as a layer, interleaved; with
    /// three or more stages, first and last within one layer of the middle stages, each flag given exactly where its stage
    /// differs from them; with two, the first flag alone and the stages one layer apart.
    /// </summary>
    private static bool SearchedSplit(ModelSpec m, RunDescription c)
    {
        int p = c.PipelineParallel;
        if (c.AccountsForEndsInPipelineSplit) return c.LayersPerVirtualStage is not null && !c.UnevenPipeline;
        if (!c.UnevenPipeline) return true;
        if (p == 1) return false;
        int first = c.LayersInChunk(m, 0), last = c.LayersInChunk(m, p - 1);
        if (p == 2) return c.LayersInLastPipelineStage is null && Math.Abs(first - last) == 1;
        int middle = c.LayersInChunk(m, 1);
        return Math.Abs(first - middle) <= 1 && Math.Abs(last - middle) <= 1
               && (c.LayersInFirstPipelineStage is null) == (first == middle) && (c.LayersInLastPipelineStage is null) == (last == middle);
    }

    /// <summary>The K best fitting configs by brute force.</summary>
    public static List<Evaluated> BruteForce(SearchSpace s, ISearchCostModel cost) =>
        new SpaceEnumerator(s).All()
            .Select(c => { var p = cost.Evaluate(s.Model, s.Cluster, c); return new Evaluated(c, p, p.PeakMemoryBytes <= s.MemoryLimitBytes); })
            .ToList();
}
