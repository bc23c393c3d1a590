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
    /// interleaving, micro-batch, recomputation, offload ratio, ZeRO stage and p), filtered by
    /// RunDescription.Validate alone: the definition the enumerator must match.
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
                    // Without context parallelism there is no exchange to choose: Megatron's default stands.
                    foreach (var comm in cp == 1 ? [ContextParallelCommType.P2p] : Enum.GetValues<ContextParallelCommType>())
                    foreach (int? a2a in comm == ContextParallelCommType.A2aP2p ? Enumerable.Range(1, cp).Select(i => (int?)i) : [null])
                    foreach (int? l in new int?[] { null }.Concat(Enumerable.Range(1, m.NumLayers).Select(i => (int?)i)))
                        foreach (bool sp in new[] { false, true })
                            for (int mb = 1; mb <= s.GlobalBatch; mb++)
                                foreach (var r in recomputes)
                                    foreach (double a in s.Constraints.OffloadGrid())
                                        for (int zero = 0; zero <= 3; zero++)
                                            foreach (double p in s.Constraints.SyncFactors)
                                            {
                                                var c = new RunDescription(dp, tp, pp, l, cp, sp, mb, s.GlobalBatch, r, a, zero, p) { ContextParallelComm = comm, HierarchicalAllToAllSize = a2a };
                                                if (c.Validate(m, world).Count == 0) result.Add(c);
                                            }
                }
        return result;
    }

    /// <summary>The K best fitting configs by brute force.</summary>
    public static List<Evaluated> BruteForce(SearchSpace s, ISearchCostModel cost) =>
        new SpaceEnumerator(s).All()
            .Select(c => { var p = cost.Evaluate(s.Model, s.Cluster, c); return new Evaluated(c, p, p.PeakMemoryBytes <= s.MemoryLimitBytes); })
            .ToList();
}
