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
    private static readonly RecomputeSpec Full = RecomputeSpec.FullUniform();

    // Each kind with its word and its spec (full recomputation: uniform, 1 layer, stands for all of them).
    private static readonly (RecomputeKind Kind, string Name, RecomputeSpec Spec)[] Table =
    [
        (RecomputeKind.None, "none", RecomputeSpec.None),
        (RecomputeKind.Selective, "selective", RecomputeSpec.Selective),
        (RecomputeKind.Full, "full", Full),
        (RecomputeKind.KwaiNorm, "kwai-norm", new(NormOutputs: true)),
        (RecomputeKind.KwaiActivation, "kwai-act", new(MlpActivation: true)),
        (RecomputeKind.Kwai, "kwai", RecomputeSpec.Kwai),
        (RecomputeKind.SelectiveKwaiNorm, "selective+kwai-norm", RecomputeSpec.Selective with { NormOutputs = true }),
        (RecomputeKind.SelectiveKwaiActivation, "selective+kwai-act", RecomputeSpec.Selective with { MlpActivation = true }),
        (RecomputeKind.SelectiveKwai, "selective+kwai", RecomputeSpec.Selective with { NormOutputs = true, MlpActivation = true }),
    ];

    /// <summary>Every word `--recompute` accepts.</summary>
    public static IEnumerable<string> AllNames => Table.Select(n => n.Name);

    public static string Name(RecomputeKind kind) => Table.First(n => n.Kind == kind).Name;

    /// <summary>The spec of a kind (full recomputation: uniform with 1 layer).</summary>
    public static RecomputeSpec Representative(RecomputeKind kind) => Table.First(n => n.Kind == kind).Spec;

    public static bool TryParse(string word, out RecomputeKind kind)
    {
        foreach (var (k, n, _) in Table)
            if (string.Equals(n, word, StringComparison.OrdinalIgnoreCase)) { kind = k; return true; }
        kind = default;
        return false;
    }

    /// <summary>The kind a spec belongs to.</summary>
    public static RecomputeKind KindOf(RecomputeSpec r) => r.Granularity == RecomputeGranularity.Full
        ? RecomputeKind.Full
        : Table.First(n => n.Spec.Granularity == r.Granularity && n.Spec.NormOutputs == r.NormOutputs && n.Spec.MlpActivation == r.MlpActivation).Kind;

    /// <summary>A short label: the kind's name, and for full recomputation its method and num-layers ("full-block-3").</summary>
    public static string Label(RecomputeSpec r) => r.Granularity == RecomputeGranularity.Full
        ? $"full-{r.Method.ToString().ToLowerInvariant()}-{r.NumLayers}"
        : Name(KindOf(r));

    /// <summary>
    /// Every recomputation valid for a layout under the constraints, in the order the search tries them
    /// (none first: it is the fastest, and its time bounds the others). The rules are RunDescription.Validate's:
    /// the SwiGLU-output recompute needs a SwiGLU model; the norm recompute needs sequence parallelism when
    /// tensor parallelism is on; full uniform num-layers divides every model chunk's layers; full block num-layers
    /// is at most the smallest chunk's layers.
    /// </summary>
    public static IReadOnlyList<RecomputeSpec> Options(ModelSpec model, Layout layout, SearchConstraints c)
    {
        var options = new List<RecomputeSpec>();
        bool Allowed(RecomputeKind k) => c.Recompute is null || c.Recompute.Contains(k);
        foreach (var (kind, _, spec) in Table)
        {
            if (kind == RecomputeKind.Full || !Allowed(kind)) continue;
            if (spec.MlpActivation && model.Activation != Activation.SwiGlu) continue;
            if (spec.NormOutputs && layout.TensorParallel > 1 && !layout.SequenceParallel) continue;
            options.Add(spec);
        }
        if (!Allowed(RecomputeKind.Full)) return options;
        var chunkSizes = layout.ChunkSizes(model).ToArray();
        int fewest = chunkSizes.Min();
        foreach (var method in new[] { RecomputeMethod.Uniform, RecomputeMethod.Block })
        {
            if (c.RecomputeMethod is not null && !c.RecomputeMethod.Contains(method)) continue;
            for (int n = 1; n <= fewest; n++)
            {
                if (method == RecomputeMethod.Uniform && chunkSizes.Any(size => size % n != 0)) continue;
                if (c.RecomputeNumLayers is not null && !c.RecomputeNumLayers.Contains(n)) continue;
                options.Add(new RecomputeSpec(RecomputeGranularity.Full, method, n));
            }
        }
        return options;
    }
}
