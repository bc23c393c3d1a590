using System.Text.Json.Nodes;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training.Interchange;

/// <summary>
/// LlamaForCausalLM's tensors (huggingface/transformers, src/transformers/models/llama/modeling_llama.py): model.embed_tokens,
/// model.layers.N.{input_layernorm, self_attn.q_proj, k_proj, v_proj, o_proj, post_attention_layernorm, mlp.gate_proj, up_proj,
/// down_proj}, model.norm and lm_head (absent when tie_word_embeddings). nn.Linear weights, [out, in], as Megatron's. The fused
/// QKV splits per query group (<see cref="HfLayout.SplitQkv"/>); FC1 is [gate | up] (the executor's SwiGLU is
/// silu(first half)·second half, <see cref="Transformer.Mlp"/>; LlamaMLP computes down_proj(silu(gate_proj(x))·up_proj(x))).
/// Rotary positions agree without any permutation: both rotate the two halves of each head by θ^(-2i/d) (modeling_llama.py
/// rotate_half; convert_llama_weights_to_hf.py permutes only Meta's interleaved pairs into that layout).
/// </summary>
public sealed class LlamaLayout : HfLayout
{
    public override string ModelType => "llama";

    public override IEnumerable<(string Name, Tensor Tensor)> ToHf(IReadOnlyDictionary<string, Tensor> serial, ModelSpec m)
    {
        yield return ("model.embed_tokens.weight", Unpadded(serial["word_embeddings"], m));
        for (int i = 0; i < m.NumLayers; i++)
        {
            string s = $"layers.{i}.", h = $"model.layers.{i}.";
            var (q, k, v) = SplitQkv(serial[s + "self_attention.linear_qkv.weight"], m);
            var fc1 = serial[s + "mlp.linear_fc1.weight"].chunk(2, 0);
            yield return (h + "input_layernorm.weight", serial[s + "input_layernorm.weight"]);
            yield return (h + "self_attn.q_proj.weight", q);
            yield return (h + "self_attn.k_proj.weight", k);
            yield return (h + "self_attn.v_proj.weight", v);
            yield return (h + "self_attn.o_proj.weight", serial[s + "self_attention.linear_proj.weight"]);
            yield return (h + "post_attention_layernorm.weight", serial[s + "pre_mlp_layernorm.weight"]);
            yield return (h + "mlp.gate_proj.weight", fc1[0]);
            yield return (h + "mlp.up_proj.weight", fc1[1]);
            yield return (h + "mlp.down_proj.weight", serial[s + "mlp.linear_fc2.weight"]);
        }
        yield return ("model.norm.weight", serial["final_layernorm.weight"]);
        if (!m.TiedEmbeddings) yield return ("lm_head.weight", Unpadded(serial["output_layer"], m));
    }

    public override IEnumerable<(string Name, Tensor Tensor)> FromHf(IReadOnlyDictionary<string, Tensor> hf, ModelSpec m, int paddedVocab)
    {
        long hidden = m.HiddenSize, ffn = m.FfnHiddenSize, heads = (long)m.NumAttentionHeads * m.HeadDim, groups = (long)m.NumQueryGroups * m.HeadDim;
        yield return ("word_embeddings", Padded(Get(hf, "model.embed_tokens.weight", m.VocabSize, hidden), paddedVocab));
        for (int i = 0; i < m.NumLayers; i++)
        {
            string s = $"layers.{i}.", h = $"model.layers.{i}.";
            yield return (s + "self_attention.linear_qkv.weight", MergeQkv(Get(hf, h + "self_attn.q_proj.weight", heads, hidden),
                Get(hf, h + "self_attn.k_proj.weight", groups, hidden), Get(hf, h + "self_attn.v_proj.weight", groups, hidden), m));
            yield return (s + "self_attention.linear_proj.weight", Get(hf, h + "self_attn.o_proj.weight", hidden, heads));
            yield return (s + "mlp.linear_fc1.weight", cat([Get(hf, h + "mlp.gate_proj.weight", ffn, hidden), Get(hf, h + "mlp.up_proj.weight", ffn, hidden)], 0));
            yield return (s + "mlp.linear_fc2.weight", Get(hf, h + "mlp.down_proj.weight", hidden, ffn));
            yield return (s + "input_layernorm.weight", Get(hf, h + "input_layernorm.weight", hidden));
            yield return (s + "pre_mlp_layernorm.weight", Get(hf, h + "post_attention_layernorm.weight", hidden));
        }
        yield return ("final_layernorm.weight", Get(hf, "model.norm.weight", hidden));
        if (!m.TiedEmbeddings) yield return ("output_layer", Padded(Get(hf, "lm_head.weight", m.VocabSize, hidden), paddedVocab));
    }

    public override JsonObject Config(ModelSpec m, RunDescription run) => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = ModelType,
        ["vocab_size"] = m.VocabSize,
        ["hidden_size"] = m.HiddenSize,
        ["intermediate_size"] = m.FfnHiddenSize,
        ["num_hidden_layers"] = m.NumLayers,
        ["num_attention_heads"] = m.NumAttentionHeads,
        ["num_key_value_heads"] = m.NumQueryGroups,
        ["head_dim"] = m.HeadDim,
        ["hidden_act"] = "silu",
        ["max_position_embeddings"] = m.PositionTableRows,
        ["rms_norm_eps"] = m.NormEpsilon,
        ["rope_theta"] = m.RotaryBase,
        ["rope_scaling"] = null,
        ["attention_bias"] = false,
        ["mlp_bias"] = false,
        ["attention_dropout"] = m.AttentionDropout,
        ["tie_word_embeddings"] = m.TiedEmbeddings,
        ["torch_dtype"] = "float32",
    };

    public override IEnumerable<string> ModelFlags(JsonObject c)
    {
        string heads = Value(c, "num_attention_heads", "32");
        IEnumerable<string> flags = ["--num-layers", Value(c, "num_hidden_layers", "32"), "--hidden-size", Value(c, "hidden_size", "4096"),
            "--ffn-hidden-size", Value(c, "intermediate_size", "11008"), "--num-attention-heads", heads,
            "--group-query-attention", "--num-query-groups", Value(c, "num_key_value_heads", heads), "--vocab-size", Value(c, "vocab_size", "32000"),
            "--seq-length", Value(c, "max_position_embeddings", "2048"), "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
            "--norm-epsilon", Value(c, "rms_norm_eps", "1e-06"), "--rotary-base", Value(c, "rope_theta", "10000"),
            "--hidden-dropout", "0", "--attention-dropout", Value(c, "attention_dropout", "0")];
        bool tied = c["tie_word_embeddings"] is JsonValue t && t.TryGetValue<bool>(out var b) && b;
        return tied ? flags : flags.Append("--untie-embeddings-and-output-weights");
    }

    public override IEnumerable<string> Mismatches(JsonObject c, ModelSpec m, RunDescription run)
    {
        const string untie = "--untie-embeddings-and-output-weights";
        string?[] all =
        [
            Field(c, "hidden_size", m.HiddenSize, "--hidden-size"),
            Field(c, "intermediate_size", m.FfnHiddenSize, "--ffn-hidden-size"),
            Field(c, "num_hidden_layers", m.NumLayers, "--num-layers"),
            Field(c, "num_attention_heads", m.NumAttentionHeads, "--num-attention-heads"),
            // LlamaConfig: num_key_value_heads None means multi-head attention; head_dim None means hidden_size / heads.
            Field(c, "num_key_value_heads", m.NumQueryGroups, "--num-query-groups", c["num_attention_heads"] is JsonValue a && a.TryGetValue<double>(out var heads) ? heads : null),
            Field(c, "head_dim", m.HeadDim, "--kv-channels", m.HeadDim),
            Field(c, "vocab_size", m.VocabSize, "--vocab-size"),
            Field(c, "rms_norm_eps", m.NormEpsilon, "--norm-epsilon", 1e-6),
            Field(c, "rope_theta", m.RotaryBase, "--rotary-base", 10000),
            Text(c, "hidden_act", "silu", "the executor's SwiGLU gates with SiLU", absent: "silu"),
            c["rope_scaling"] is null ? null : "config.json has rope_scaling; the executor runs plain rotary positions, so the model would not compute what it learned.",
            Flag(c, "attention_bias", false, false, "the executor's Llama linears have no biases"),
            Flag(c, "mlp_bias", false, false, "the executor's Llama linears have no biases"),
            Flag(c, "tie_word_embeddings", m.TiedEmbeddings, false, m.TiedEmbeddings ? $"this run ties them (give {untie})" : $"this run's are untied ({untie})"),
        ];
        return all.OfType<string>();
    }
}
