using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// The kinds of activation recomputation the search tells apart (the `--recompute` constraint's words).
/// Full recomputation is one kind whose method and num-layers the search also enumerates.
/// Megatron-Kwai's norm/activation recompute may stand alone or join Megatron's selective recompute.
/// </summary>
public enum RecomputeKind
{
    None, Selective, Full,
    KwaiNorm, KwaiActivation, Kwai,
    SelectiveKwaiNorm, SelectiveKwaiActivation, SelectiveKwai,
}

/// <summary>Names and specs of <see cref="RecomputeKind"/>, and the valid recomputation options of a layout.</summary>
public static class RecomputeChoices
{
    private static readonly (RecomputeKind Kind, string Name)[] Names =
    [
        (RecomputeKind.None, "none"), (RecomputeKind.Selective, "selective"), (RecomputeKind.Full, "full"),
        (RecomputeKind.KwaiNorm, "kwai-norm"), (RecomputeKind.KwaiActivation, "kwai-act"), (RecomputeKind.Kwai, "kwai"),
        (RecomputeKind.SelectiveKwaiNorm, "selective+kwai-norm"), (RecomputeKind.SelectiveKwaiActivation, "selective+kwai-act"),
        (RecomputeKind.SelectiveKwai, "selective+kwai"),
    ];

    /// <summary>Every word `--recompute` accepts.</summary>
    public static IEnumerable<string> AllNames => Names.Select(n => n.Name);

    public static string Name(RecomputeKind kind) => Names.First(n => n.Kind == kind).Name;

    public static bool TryParse(string word, out RecomputeKind kind)
    {
        foreach (var (k, n) in Names)
            if (string.Equals(n, word, StringComparison.OrdinalIgnoreCase)) { kind = k; return true; }
        kind = default;
        return false;
    }

    /// <summary>The kind a spec belongs to.</summary>
    public static RecomputeKind KindOf(RecomputeSpec r)
    {
        if (r.Granularity == RecomputeGranularity.Full) return RecomputeKind.Full;
        bool sel = r.Granularity == RecomputeGranularity.Selective;
        return (r.NormOutputs, r.MlpActivation) switch
        {
            (false, false) => sel ? RecomputeKind.Selective : RecomputeKind.None,
            (true, false) => sel ? RecomputeKind.SelectiveKwaiNorm : RecomputeKind.KwaiNorm,
            (false, true) => sel ? RecomputeKind.SelectiveKwaiActivation : RecomputeKind.KwaiActivation,
            _ => sel ? RecomputeKind.SelectiveKwai : RecomputeKind.Kwai,
        };
    }

    /// <summary>A short label: the kind's name, and for full recomputation its method and num-layers ("full-block-3").</summary>
    public static string Label(RecomputeSpec r) => r.Granularity == RecomputeGranularity.Full
        ? $"full-{r.Method.ToString().ToLowerInvariant()}-{r.NumLayers}"
        : Name(KindOf(r));

    /// <summary>
    /// Every recomputation valid for a layout under the constraints, in the order the search tries them
    /// (none first: it is the fastest, and its time bounds the others). The rules are ParallelConfig.Validate's:
    /// the SwiGLU-output recompute needs a SwiGLU model; the norm recompute needs sequence parallelism when
    /// tensor parallelism is on; full uniform num-layers divides a model chunk's layers; full block num-layers
    /// is at most a chunk's layers.
    /// </summary>
    public static IReadOnlyList<RecomputeSpec> Options(ModelSpec model, Layout layout, SearchConstraints c)
    {
        var options = new List<RecomputeSpec>();
        bool Allowed(RecomputeKind k) => c.Recompute is null || c.Recompute.Contains(k);
        foreach (var granularity in new[] { RecomputeGranularity.None, RecomputeGranularity.Selective })
            foreach (var (norm, act) in new[] { (false, false), (true, false), (false, true), (true, true) })
            {
                var spec = new RecomputeSpec(granularity, NormOutputs: norm, MlpActivation: act);
                if (!Allowed(KindOf(spec))) continue;
                if (act && model.Activation != Activation.SwiGlu) continue;
                if (norm && layout.TensorParallel > 1 && !layout.SequenceParallel) continue;
                options.Add(spec);
            }
        if (!Allowed(RecomputeKind.Full)) return options;
        int chunkLayers = layout.LayersPerModelChunk(model);
        foreach (var method in new[] { RecomputeMethod.Uniform, RecomputeMethod.Block })
        {
            if (c.RecomputeMethod is not null && !c.RecomputeMethod.Contains(method)) continue;
            for (int n = 1; n <= chunkLayers; n++)
            {
                if (method == RecomputeMethod.Uniform && chunkLayers % n != 0) continue;
                if (c.RecomputeNumLayers is not null && !c.RecomputeNumLayers.Contains(n)) continue;
                options.Add(new RecomputeSpec(RecomputeGranularity.Full, method, n));
            }
        }
        return options;
    }
}
