using System.Text.Json.Serialization;

namespace Harness.Simulator.Specs;

/// <summary>MLP activation: GeLU with a 4h-style single up-projection, or SwiGLU (gate and up projections).</summary>
public enum Activation { Gelu, SwiGlu }

/// <summary>Block normalization.</summary>
public enum Normalization { LayerNorm, RmsNorm }

/// <summary>How positions enter the model: a learned table added to the embedding (GPT), or rotary (Llama).</summary>
public enum PositionEmbedding { Learned, Rotary }

/// <summary>
/// A decoder-only transformer, in Megatron-LM's terms (--num-layers, --hidden-size, ...).
/// Immutable; presets live in <see cref="ModelPresets"/>, user files are read by <see cref="SpecJson"/>.
/// </summary>
/// <param name="NumQueryGroups">Key/value groups (GQA). Equal to <paramref name="NumAttentionHeads"/> for multi-head attention.</param>
/// <param name="HiddenDropout">Megatron's --hidden-dropout: after the attention projection and the MLP (GPT as in
/// Korthikanti et al. 2022: 0.1); Llama-style models train without dropout.</param>
/// <param name="AttentionDropout">Megatron's --attention-dropout: on the attention probabilities.</param>
/// <param name="MaxPositionEmbeddings">Megatron's --max-position-embeddings: rows of the learned position table (at least the
/// sequence length); null: the sequence length.</param>
/// <param name="NormEpsilon">Megatron's --norm-epsilon: the epsilon of every LayerNorm/RMSNorm (default 1e-5).</param>
/// <param name="RotaryBase">Megatron's --rotary-base: θ of rotary positions (default 10000; Llama 3 and TinyLlama-style
/// models use 500000).</param>
public sealed record ModelSpec(
    string Name,
    int NumLayers,
    int HiddenSize,
    int NumAttentionHeads,
    int NumQueryGroups,
    int FfnHiddenSize,
    int VocabSize,
    int SeqLength,
    Activation Activation,
    Normalization Normalization,
    PositionEmbedding PositionEmbedding,
    bool TiedEmbeddings,
    double HiddenDropout,
    double AttentionDropout,
    int? MaxPositionEmbeddings = null,
    double NormEpsilon = 1e-5,
    double RotaryBase = 10000)
{
    /// <summary>Rows of the learned position table (none with rotary positions).</summary>
    public int PositionTableRows => MaxPositionEmbeddings ?? SeqLength;

    /// <summary>Whether the block applies dropout at all (its masks are saved for backward).</summary>
    [JsonIgnore]
    public bool Dropout => HiddenDropout > 0 || AttentionDropout > 0;

    /// <summary>Channels per attention head (Megatron's kv_channels).</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>True when key/value heads are shared by several query heads.</summary>
    public bool IsGroupedQuery => NumQueryGroups != NumAttentionHeads;

    /// <summary>Output width of the fused QKV projection: h for Q plus 2·g·(h/a) for K and V.</summary>
    public long QkvWidth => HiddenSize + 2L * NumQueryGroups * HeadDim;

    /// <summary>Weights of one transformer layer (norm weights and biases included).</summary>
    public long ParametersPerLayer
    {
        get
        {
            long h = HiddenSize, f = FfnHiddenSize;
            bool bias = Normalization == Normalization.LayerNorm; // GPT uses biased linears; Llama does not
            long attention = h * QkvWidth + h * h + (bias ? QkvWidth + h : 0);
            long mlp = Activation == Activation.SwiGlu
                ? 3 * h * f
                : 2 * h * f + (bias ? f + h : 0);
            long norms = Normalization == Normalization.LayerNorm ? 4 * h : 2 * h;
            return attention + mlp + norms;
        }
    }

    /// <summary>Word embedding (plus a learned position table) parameters.</summary>
    public long EmbeddingParameters =>
        (long)VocabSize * HiddenSize + (PositionEmbedding == PositionEmbedding.Learned ? (long)PositionTableRows * HiddenSize : 0);

    /// <summary>The output layer's own weights: zero when tied to the word embedding.</summary>
    public long OutputLayerParameters => TiedEmbeddings ? 0 : (long)VocabSize * HiddenSize;

    /// <summary>Final norm after the last layer.</summary>
    public long FinalNormParameters => Normalization == Normalization.LayerNorm ? 2L * HiddenSize : HiddenSize;

    /// <summary>All parameters of the model.</summary>
    public long TotalParameters =>
        NumLayers * ParametersPerLayer + EmbeddingParameters + OutputLayerParameters + FinalNormParameters;

    /// <summary>Every reason this model is malformed, in words; empty when it is well formed.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        void Positive(string flag, long value)
        {
            if (value <= 0) errors.Add($"{flag} is {value}; it must be a positive integer.");
        }
        Positive("--num-layers", NumLayers);
        Positive("--hidden-size", HiddenSize);
        Positive("--num-attention-heads", NumAttentionHeads);
        // Without grouped-query attention the groups are the heads: a wrong head count is not reported twice.
        if (NumQueryGroups != NumAttentionHeads) Positive("--num-query-groups", NumQueryGroups);
        Positive("--ffn-hidden-size", FfnHiddenSize);
        Positive("--vocab-size", VocabSize);
        Positive("--seq-length", SeqLength);
        foreach (var (flag, p) in new[] { ("--hidden-dropout", HiddenDropout), ("--attention-dropout", AttentionDropout) })
            if (p is < 0 or >= 1 || double.IsNaN(p)) errors.Add($"{flag} is {FlagText.Of(p)}; a dropout probability is in [0, 1).");
        if (!(NormEpsilon > 0) || double.IsInfinity(NormEpsilon)) errors.Add($"--norm-epsilon is {FlagText.Of(NormEpsilon)}; it must be above 0.");
        if (!(RotaryBase > 1) || double.IsInfinity(RotaryBase)) errors.Add($"--rotary-base is {FlagText.Of(RotaryBase)}; it must be above 1.");
        if (MaxPositionEmbeddings is int rows && rows < SeqLength)
            errors.Add($"--max-position-embeddings {rows} is below --seq-length {SeqLength}; the position table needs a row per position.");
        if (errors.Count > 0) return errors;
        if (HiddenSize % NumAttentionHeads != 0)
            errors.Add($"--hidden-size {HiddenSize} is not divisible by --num-attention-heads {NumAttentionHeads}.");
        if (NumAttentionHeads % NumQueryGroups != 0)
            errors.Add($"--num-attention-heads {NumAttentionHeads} is not divisible by --num-query-groups {NumQueryGroups}.");
        return errors;
    }
}
