using Harness.Simulator.Specs;

namespace Harness.Megatron;

/// <summary>
/// The model, from <c>--model PRESET|FILE</c> and/or Megatron-LM's model flags. Flags override the preset or
/// file; without <c>--model</c> the flags describe the whole model, with Megatron's defaults (ffn 4h, or
/// int(8h/3/64)·64 with --swiglu; LayerNorm; learned positions; tied embeddings; dropout 0.1).
/// </summary>
public static class ModelFlags
{
    public const string DefaultPreset = "llama-7b";

    public static readonly Flag[] Flags =
    {
        new("--model", true, $"model preset ({string.Join(", ", ModelPresets.All.Keys)}) or JSON file"),
        new("--num-layers", true, "transformer layers"),
        new("--hidden-size", true, "hidden size h"),
        new("--ffn-hidden-size", true, "MLP hidden size"),
        new("--num-attention-heads", true, "attention heads a"),
        new("--group-query-attention", false, "grouped-query attention (with --num-query-groups)"),
        new("--num-query-groups", true, "key/value groups"),
        new("--seq-length", true, "sequence length s"),
        new("--vocab-size", true, "vocabulary size V (default 50257, GPT-2 BPE)"),
        new("--swiglu", false, "SwiGLU MLP"),
        new("--normalization", true, "LayerNorm or RMSNorm"),
        new("--position-embedding-type", true, "learned_absolute or rope"),
        new("--use-rotary-position-embeddings", false, "rotary positions (older Megatron flag)"),
        new("--untie-embeddings-and-output-weights", false, "separate output layer weights"),
        new("--attention-dropout", true, "attention dropout probability (default 0.1)"),
        new("--hidden-dropout", true, "hidden dropout probability (default 0.1)"),
        new("--max-position-embeddings", true, "rows of the learned position table (default: --seq-length)"),
        new("--disable-bias-linear", false, "linears without biases (as every RMSNorm model here; GPT's LayerNorm models keep them)"),
        new("--no-position-embedding", false, "no learned position table (with rotary positions)"),
        new("--norm-epsilon", true, "epsilon of every LayerNorm/RMSNorm (default 1e-5)"),
        new("--rotary-base", true, "θ of rotary positions (default 10000)"),
        new("--kv-channels", true, "channels per attention head (must be --hidden-size / --num-attention-heads)"),
    };

    /// <summary>The model the flags describe, or null with the reasons in <see cref="CommandLine.Errors"/>.</summary>
    /// <param name="defaultPreset">The model the command uses when no model flag is given, named in the sentence about a model
    /// given by flags alone.</param>
    public static ModelSpec? Read(CommandLine cl, string defaultPreset = DefaultPreset)
    {
        ModelSpec? baseModel = null;
        var name = cl.String("--model");
        if (name is not null)
        {
            if (ModelPresets.All.TryGetValue(name, out var preset)) baseModel = preset;
            else if (File.Exists(name))
            {
                try { baseModel = SpecJson.ReadModel(name); }
                catch (SpecFileException e) { cl.Errors.Add(e.Message); return null; }
            }
            else
            {
                cl.Errors.Add($"--model '{name}' is neither a preset ({string.Join(", ", ModelPresets.All.Keys)}) nor an existing JSON file.");
                return null;
            }
        }

        int? layers = cl.Int("--num-layers"), hidden = cl.Int("--hidden-size"), ffn = cl.Int("--ffn-hidden-size");
        int? heads = cl.Int("--num-attention-heads"), groups = cl.Int("--num-query-groups");
        int? seq = cl.Int("--seq-length"), vocab = cl.Int("--vocab-size");
        double? attentionDropout = cl.Double("--attention-dropout"), hiddenDropout = cl.Double("--hidden-dropout");
        string? norm = cl.Choice("--normalization", "LayerNorm", "RMSNorm");
        string? positions = cl.Choice("--position-embedding-type", "learned_absolute", "rope");
        bool swiglu = cl.Switch("--swiglu");
        if (groups is not null && !cl.Switch("--group-query-attention"))
            cl.Errors.Add("--num-query-groups needs --group-query-attention (as in Megatron-LM).");

        if (baseModel is null)
        {
            if (!cl.HasAny(Flags))
                baseModel = ModelPresets.All[DefaultPreset];
            else
            {
                if (vocab is null && cl.Ignored.FirstOrDefault(a => a.StartsWith("--tokenizer-", StringComparison.Ordinal) || a.StartsWith("--vocab-file", StringComparison.Ordinal)) is string tokenizer)
                    cl.Errors.Add($"{tokenizer.Split(' ')[0]} sets the vocabulary in Megatron; harness simulate does not read tokenizer files for its size (harness run does): add --vocab-size.");
                var missing = new[] { ("--num-layers", layers), ("--hidden-size", hidden), ("--num-attention-heads", heads), ("--seq-length", seq) }
                    .Where(f => f.Item2 is null).Select(f => f.Item1).ToList();
                if (missing.Count > 0)
                {
                    var given = Flags.Select(f => f.Name).First(n => cl.String(n) is not null || cl.Switch(n));
                    cl.Errors.Add($"{given} without --model describes a model of its own, which also needs {string.Join(", ", missing)}; " +
                                  $"to change only that of a preset, add --model PRESET (the default is {defaultPreset}).");
                }
                if (layers is null || hidden is null || heads is null || seq is null) return null;
                int h = hidden.Value;
                baseModel = new ModelSpec("custom", layers.Value, h, heads.Value, heads.Value,
                    swiglu ? (int)(4.0 * h * 2 / 3 / 64) * 64 : 4 * h, 50257, seq.Value,
                    Activation.Gelu, Normalization.LayerNorm, PositionEmbedding.Learned, TiedEmbeddings: true, HiddenDropout: 0.1, AttentionDropout: 0.1);
            }
        }

        var m = baseModel;
        if (layers is int l) m = m with { NumLayers = l };
        if (hidden is int hs) m = m with { HiddenSize = hs };
        if (heads is int a) m = m with { NumAttentionHeads = a, NumQueryGroups = groups ?? (m.IsGroupedQuery ? m.NumQueryGroups : a) };
        if (groups is int g) m = m with { NumQueryGroups = g };
        if (ffn is int f) m = m with { FfnHiddenSize = f };
        if (seq is int s) m = m with { SeqLength = s };
        if (vocab is int v) m = m with { VocabSize = v };
        if (swiglu) m = m with { Activation = Activation.SwiGlu };
        if (norm is not null) m = m with { Normalization = norm == "RMSNorm" ? Normalization.RmsNorm : Normalization.LayerNorm };
        if (positions == "rope" || cl.Switch("--use-rotary-position-embeddings")) m = m with { PositionEmbedding = PositionEmbedding.Rotary };
        else if (positions == "learned_absolute") m = m with { PositionEmbedding = PositionEmbedding.Learned };
        if (cl.Switch("--untie-embeddings-and-output-weights")) m = m with { TiedEmbeddings = false };
        if (attentionDropout is double ad) m = m with { AttentionDropout = ad };
        if (hiddenDropout is double hd) m = m with { HiddenDropout = hd };

        if (cl.Int("--max-position-embeddings") is int rows) m = m with { MaxPositionEmbeddings = rows };
        if (cl.Double("--norm-epsilon") is double eps) m = m with { NormEpsilon = eps };
        if (cl.Double("--rotary-base") is double theta) m = m with { RotaryBase = theta };
        // The model's linears carry biases exactly when it normalizes with LayerNorm (GPT) (ModelSpec.ParametersPerLayer).
        if (cl.Switch("--disable-bias-linear") && m.Normalization == Normalization.LayerNorm)
            cl.Errors.Add("--disable-bias-linear with LayerNorm is not modelled: GPT-style models here keep their biases, RMSNorm ones have none.");
        if (cl.Switch("--no-position-embedding") && m.PositionEmbedding == PositionEmbedding.Learned)
            cl.Errors.Add("--no-position-embedding without rotary positions (--position-embedding-type rope) leaves the model no positions; that is not modelled.");
        if (cl.Int("--kv-channels") is int kv && kv * m.NumAttentionHeads != m.HiddenSize)
            cl.Errors.Add($"--kv-channels {kv} differs from --hidden-size / --num-attention-heads = {m.HiddenSize / Math.Max(1, m.NumAttentionHeads)}; other head widths are not modelled.");
        var errors = m.Validate();
        cl.Errors.AddRange(errors);
        return errors.Count == 0 ? m : null;
    }
}
