using System.Text.Json.Nodes;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training.Interchange;

/// <summary>
/// A Hugging Face transformers architecture the serial model maps onto, tensor for tensor: its model_type, the names and
/// layouts of its tensors (<see cref="ToHf"/>, <see cref="FromHf"/>, inverse to each other) and its config.json
/// (<see cref="Config"/>, checked against a run's model by <see cref="Mismatches"/>). The tables go out with the tokenizer's
/// vocabulary only (the rows Megatron pads on are the run's, not the model's) and come back padded as Megatron's checkpoint
/// converter pads them: the last row repeated (tools/checkpoint/saver_base.py pad_weight, NVIDIA/Megatron-LM d98e8a6).
/// </summary>
public abstract class HfLayout
{
    public abstract string ModelType { get; }

    /// <summary>The HF tensors of the serial model's full weights (tables padded or not; they go out with <paramref name="model"/>'s vocabulary).</summary>
    public abstract IEnumerable<(string Name, Tensor Tensor)> ToHf(IReadOnlyDictionary<string, Tensor> serial, ModelSpec model);

    /// <summary>The serial model's full weights from the HF tensors of <paramref name="model"/> (its tokenizer's vocabulary), the
    /// tables padded to <paramref name="paddedVocab"/> rows. Throws InvalidDataException naming a tensor that is missing or of the wrong shape.</summary>
    public abstract IEnumerable<(string Name, Tensor Tensor)> FromHf(IReadOnlyDictionary<string, Tensor> hf, ModelSpec model, int paddedVocab);

    /// <summary>config.json for <paramref name="model"/> (its tokenizer's vocabulary) as <paramref name="run"/> computes it (the
    /// run's fusions choose GeLU's form).</summary>
    public abstract JsonObject Config(ModelSpec model, RunDescription run);

    /// <summary>Each field of a config.json that contradicts <paramref name="model"/> (its tokenizer's vocabulary) as
    /// <paramref name="run"/> computes it, as a sentence naming it and the run's flag.</summary>
    public abstract IEnumerable<string> Mismatches(JsonObject config, ModelSpec model, RunDescription run);

    /// <summary>The Megatron model flags of the model a config.json describes, with HF's defaults for fields it leaves out; a run's
    /// own flags placed after them override them (and are then checked against the config by <see cref="Mismatches"/>).</summary>
    public abstract IEnumerable<string> ModelFlags(JsonObject config);

    /// <summary>A config field as flag text, or <paramref name="absent"/> when the config leaves it out (or null).</summary>
    protected static string Value(JsonObject config, string field, string absent) =>
        config[field] is JsonValue v && v.GetValueKind() is System.Text.Json.JsonValueKind.Number or System.Text.Json.JsonValueKind.String ? v.ToString() : absent;

    public static IReadOnlyList<HfLayout> All { get; } = [new Gpt2Layout(), new LlamaLayout()];

    /// <summary>The architecture of a model: GPT-2's (LayerNorm, learned positions, GeLU, tied output, multi-head attention) or
    /// Llama's (RMSNorm, rotary, SwiGLU); null with the reason when it is neither.</summary>
    public static (HfLayout? Layout, string? Why) For(ModelSpec m)
    {
        if (m is { Normalization: Normalization.LayerNorm, PositionEmbedding: PositionEmbedding.Learned, Activation: Activation.Gelu })
            return !m.TiedEmbeddings ? (null, "GPT-2 ties its output layer to the word embedding; this model's are untied")
                : m.IsGroupedQuery ? (null, "GPT-2 has multi-head attention; this model groups its queries")
                : (new Gpt2Layout(), null);
        if (m is { Normalization: Normalization.RmsNorm, PositionEmbedding: PositionEmbedding.Rotary, Activation: Activation.SwiGlu })
            return (new LlamaLayout(), null);
        return (null, $"it has {m.Normalization}, {m.PositionEmbedding} positions and {m.Activation}, which is neither GPT-2 (LayerNorm, learned positions, GeLU) nor Llama (RMSNorm, rotary, SwiGLU)");
    }

    /// <summary>The rows of a vocabulary table the tokenizer uses.</summary>
    protected static Tensor Unpadded(Tensor table, ModelSpec model) => table.narrow(0, 0, model.VocabSize);

    /// <summary>A table of the tokenizer's rows padded to <paramref name="rows"/> by repeating its last row (Megatron's converter).</summary>
    protected static Tensor Padded(Tensor table, int rows)
    {
        long extra = rows - table.shape[0];
        return extra == 0 ? table : cat([table, table.narrow(0, table.shape[0] - 1, 1).expand(extra, table.shape[1])], 0);
    }

    /// <summary>
    /// Q, K and V of the fused QKV projection's rows (or bias), which Megatron lays out per query group, [q heads of the group |
    /// k | v]: Q's rows head by head (head j of group g is head g·(a/g) + j, the head Hugging Face's repeat_kv pairs with key
    /// group g), then K's and V's group by group (Megatron's own HF converter splits them so: tools/checkpoint/saver_hf_llava.py
    /// recover_lm_qkv_weight, d98e8a6). Rotary needs no permutation: the executor rotates the two halves of each head
    /// (<see cref="Transformer.RotaryEmbedding"/>), as HF Llama's rotate_half does.
    /// </summary>
    protected static (Tensor Q, Tensor K, Tensor V) SplitQkv(Tensor qkv, ModelSpec m)
    {
        long groups = m.NumQueryGroups, perGroup = m.NumAttentionHeads / m.NumQueryGroups, d = m.HeadDim;
        long[] rest = qkv.shape[1..];
        var grouped = qkv.reshape([groups, perGroup + 2, d, .. rest]);
        var parts = grouped.split([perGroup, 1, 1], 1);
        return (parts[0].reshape([groups * perGroup * d, .. rest]), parts[1].reshape([groups * d, .. rest]), parts[2].reshape([groups * d, .. rest]));
    }

    /// <summary>The fused QKV rows from Q, K and V: the inverse of <see cref="SplitQkv"/>.</summary>
    protected static Tensor MergeQkv(Tensor q, Tensor k, Tensor v, ModelSpec m)
    {
        long groups = m.NumQueryGroups, perGroup = m.NumAttentionHeads / m.NumQueryGroups, d = m.HeadDim;
        long[] rest = q.shape[1..];
        return cat([q.reshape([groups, perGroup, d, .. rest]), k.reshape([groups, 1, d, .. rest]), v.reshape([groups, 1, d, .. rest])], 1)
            .reshape([m.QkvWidth, .. rest]);
    }

    /// <summary>The tensor <paramref name="name"/> of an HF checkpoint, which must have <paramref name="shape"/>, as float32.</summary>
    protected static Tensor Get(IReadOnlyDictionary<string, Tensor> hf, string name, params long[] shape)
    {
        if (!hf.TryGetValue(name, out var t)) throw new InvalidDataException($"The Hugging Face checkpoint has no tensor {name}, which this model needs.");
        if (!t.shape.SequenceEqual(shape))
            throw new InvalidDataException($"The Hugging Face checkpoint's {name} is [{string.Join(", ", t.shape)}]; this model needs [{string.Join(", ", shape)}].");
        return t.to(ScalarType.Float32);
    }

    /// <summary>A config field that must equal the run's value: a sentence naming both when it does not (absent: <paramref name="absent"/>, or a
    /// sentence when that is null too).</summary>
    protected static string? Field(JsonObject config, string field, double expected, string flag, double? absent = null)
    {
        double? value = config[field] is JsonValue v && v.TryGetValue<double>(out var x) ? x : absent;
        if (value is null) return $"config.json has no {field}; this run's {flag} is {FlagText.Of(expected)}.";
        return value == expected ? null : $"config.json's {field} is {FlagText.Of(value.Value)}; this run's {flag} is {FlagText.Of(expected)}.";
    }

    /// <summary>A config field that must be the given text when present (or be absent with <paramref name="absent"/> that text).</summary>
    protected static string? Text(JsonObject config, string field, string expected, string why, string? absent = null)
    {
        string? value = config[field] is JsonValue v && v.TryGetValue<string>(out var s) ? s : absent;
        return value == expected ? null : $"config.json's {field} is {value ?? "absent"}; {why}.";
    }

    /// <summary>A boolean config field that must equal the run's, with HF's default when absent.</summary>
    protected static string? Flag(JsonObject config, string field, bool expected, bool absent, string why)
    {
        bool value = config[field] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : absent;
        return value == expected ? null : $"config.json's {field} is {(value ? "true" : "false")}; {why}.";
    }
}
