using System.Text.Json.Nodes;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training.Interchange;

/// <summary>
/// GPT2LMHeadModel's tensors (huggingface/transformers, src/transformers/models/gpt2/modeling_gpt2.py): transformer.wte and wpe,
/// transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, transformer.ln_f, and lm_head tied to wte (not
/// stored). Its linears are Conv1D (src/transformers/pytorch_utils.py: y = x·W + b), so their weights are stored transposed,
/// [in, out]; c_attn's output is [Q of every head | K | V], where Megatron's fused QKV interleaves them per head
/// (<see cref="HfLayout.SplitQkv"/>; transformers' megatron_gpt2 converter reorders the same way). Biases everywhere, as
/// Megatron's GPT keeps them.
/// </summary>
public sealed class Gpt2Layout : HfLayout
{
    public override string ModelType => "gpt2";

    public override IEnumerable<(string Name, Tensor Tensor)> ToHf(IReadOnlyDictionary<string, Tensor> serial, ModelSpec m)
    {
        yield return ("transformer.wte.weight", Unpadded(serial["word_embeddings"], m));
        yield return ("transformer.wpe.weight", serial["position_embeddings"]);
        for (int i = 0; i < m.NumLayers; i++)
        {
            string s = $"layers.{i}.", h = $"transformer.h.{i}.";
            var (q, k, v) = SplitQkv(serial[s + "self_attention.linear_qkv.weight"], m);
            var (qb, kb, vb) = SplitQkv(serial[s + "self_attention.linear_qkv.bias"], m);
            yield return (h + "ln_1.weight", serial[s + "input_layernorm.weight"]);
            yield return (h + "ln_1.bias", serial[s + "input_layernorm.bias"]);
            yield return (h + "attn.c_attn.weight", cat([q, k, v], 0).t().contiguous());
            yield return (h + "attn.c_attn.bias", cat([qb, kb, vb], 0));
            yield return (h + "attn.c_proj.weight", serial[s + "self_attention.linear_proj.weight"].t().contiguous());
            yield return (h + "attn.c_proj.bias", serial[s + "self_attention.linear_proj.bias"]);
            yield return (h + "ln_2.weight", serial[s + "pre_mlp_layernorm.weight"]);
            yield return (h + "ln_2.bias", serial[s + "pre_mlp_layernorm.bias"]);
            yield return (h + "mlp.c_fc.weight", serial[s + "mlp.linear_fc1.weight"].t().contiguous());
            yield return (h + "mlp.c_fc.bias", serial[s + "mlp.linear_fc1.bias"]);
            yield return (h + "mlp.c_proj.weight", serial[s + "mlp.linear_fc2.weight"].t().contiguous());
            yield return (h + "mlp.c_proj.bias", serial[s + "mlp.linear_fc2.bias"]);
        }
        yield return ("transformer.ln_f.weight", serial["final_layernorm.weight"]);
        yield return ("transformer.ln_f.bias", serial["final_layernorm.bias"]);
    }

    public override IEnumerable<(string Name, Tensor Tensor)> FromHf(IReadOnlyDictionary<string, Tensor> hf, ModelSpec m, int paddedVocab)
    {
        long hidden = m.HiddenSize, ffn = m.FfnHiddenSize, width = 3L * hidden;
        yield return ("word_embeddings", Padded(Get(hf, "transformer.wte.weight", m.VocabSize, hidden), paddedVocab));
        yield return ("position_embeddings", Get(hf, "transformer.wpe.weight", m.PositionTableRows, hidden));
        for (int i = 0; i < m.NumLayers; i++)
        {
            string s = $"layers.{i}.", h = $"transformer.h.{i}.";
            var qkv = Get(hf, h + "attn.c_attn.weight", hidden, width).t().split(hidden, 0);
            var qkvBias = Get(hf, h + "attn.c_attn.bias", width).split(hidden, 0);
            yield return (s + "self_attention.linear_qkv.weight", MergeQkv(qkv[0], qkv[1], qkv[2], m));
            yield return (s + "self_attention.linear_qkv.bias", MergeQkv(qkvBias[0], qkvBias[1], qkvBias[2], m));
            yield return (s + "self_attention.linear_proj.weight", Get(hf, h + "attn.c_proj.weight", hidden, hidden).t().contiguous());
            yield return (s + "self_attention.linear_proj.bias", Get(hf, h + "attn.c_proj.bias", hidden));
            yield return (s + "mlp.linear_fc1.weight", Get(hf, h + "mlp.c_fc.weight", hidden, ffn).t().contiguous());
            yield return (s + "mlp.linear_fc1.bias", Get(hf, h + "mlp.c_fc.bias", ffn));
            yield return (s + "mlp.linear_fc2.weight", Get(hf, h + "mlp.c_proj.weight", ffn, hidden).t().contiguous());
            yield return (s + "mlp.linear_fc2.bias", Get(hf, h + "mlp.c_proj.bias", hidden));
            yield return (s + "input_layernorm.weight", Get(hf, h + "ln_1.weight", hidden));
            yield return (s + "input_layernorm.bias", Get(hf, h + "ln_1.bias", hidden));
            yield return (s + "pre_mlp_layernorm.weight", Get(hf, h + "ln_2.weight", hidden));
            yield return (s + "pre_mlp_layernorm.bias", Get(hf, h + "ln_2.bias", hidden));
        }
        yield return ("final_layernorm.weight", Get(hf, "transformer.ln_f.weight", hidden));
        yield return ("final_layernorm.bias", Get(hf, "transformer.ln_f.bias", hidden));
    }

    public override JsonObject Config(ModelSpec m, RunDescription run) => new()
    {
        ["architectures"] = new JsonArray("GPT2LMHeadModel"),
        ["model_type"] = ModelType,
        ["vocab_size"] = m.VocabSize,
        ["n_positions"] = m.PositionTableRows,
        ["n_embd"] = m.HiddenSize,
        ["n_layer"] = m.NumLayers,
        ["n_head"] = m.NumAttentionHeads,
        ["n_inner"] = m.FfnHiddenSize,
        ["activation_function"] = Activation(run),
        ["layer_norm_epsilon"] = m.NormEpsilon,
        ["resid_pdrop"] = m.HiddenDropout,
        ["embd_pdrop"] = m.HiddenDropout,
        ["attn_pdrop"] = m.AttentionDropout,
        ["tie_word_embeddings"] = true,
        ["torch_dtype"] = "float32",
    };

    /// <summary>GeLU as the run computes it. Megatron's fused bias-GeLU (megatron/core/fusions/fused_bias_gelu.py, on unless
    /// --no-bias-gelu-fusion) is tanh's approximation, 0.5·x·(1 + tanh(0.79788456·x·(1 + 0.044715·x²))), which is what GPT-2's
    /// own "gelu_new" computes; unfused, Megatron runs torch.nn.functional.gelu, erf's exact form, transformers' "gelu".</summary>
    private static string Activation(RunDescription run) => run.FusedElementwise ? TanhGelu : "gelu";

    private const string TanhGelu = "gelu_new";

    /// <summary>transformers' names of tanh's GeLU approximation (activations.py: NewGELUActivation, PytorchGELUTanh, FastGELUActivation
    /// compute the same function).</summary>
    private static readonly string[] TanhGelus = [TanhGelu, "gelu_pytorch_tanh", "gelu_fast"];

    public override IEnumerable<string> ModelFlags(JsonObject c)
    {
        string hidden = Value(c, "n_embd", "768"), positions = Value(c, "n_positions", "1024");
        // Erf's exact GeLU is Megatron's unfused path, whose three switches the simulator takes together.
        string[] gelu = Value(c, "activation_function", TanhGelu) == "gelu" ? ["--no-masked-softmax-fusion", "--no-bias-gelu-fusion", "--no-bias-dropout-fusion"] : [];
        return [.. gelu, "--num-layers", Value(c, "n_layer", "12"), "--hidden-size", hidden, "--num-attention-heads", Value(c, "n_head", "12"),
            "--ffn-hidden-size", Value(c, "n_inner", int.TryParse(hidden, out int h) ? $"{4 * h}" : hidden), "--vocab-size", Value(c, "vocab_size", "50257"),
            "--max-position-embeddings", positions, "--seq-length", positions, "--norm-epsilon", Value(c, "layer_norm_epsilon", "1e-05"),
            "--hidden-dropout", Value(c, "resid_pdrop", "0.1"), "--attention-dropout", Value(c, "attn_pdrop", "0.1")];
    }

    public override IEnumerable<string> Mismatches(JsonObject c, ModelSpec m, RunDescription run)
    {
        string?[] all =
        [
            Field(c, "n_embd", m.HiddenSize, "--hidden-size"),
            Field(c, "n_layer", m.NumLayers, "--num-layers"),
            Field(c, "n_head", m.NumAttentionHeads, "--num-attention-heads"),
            // GPT2Config: n_inner None means 4 x n_embd.
            Field(c, "n_inner", m.FfnHiddenSize, "--ffn-hidden-size", c["n_embd"] is JsonValue e && e.TryGetValue<double>(out var h) ? 4 * h : null),
            Field(c, "n_positions", m.PositionTableRows, "--max-position-embeddings"),
            Field(c, "vocab_size", m.VocabSize, "--vocab-size"),
            Field(c, "layer_norm_epsilon", m.NormEpsilon, "--norm-epsilon", 1e-5),
            GeluMismatch(c, run),
            Flag(c, "tie_word_embeddings", true, true, "GPT-2 here ties its output layer to the word embedding"),
        ];
        return all.OfType<string>();
    }

    /// <summary>config.json's GeLU against the run's: tanh's approximation runs under Megatron's bias-GeLU fusion, erf's without it.</summary>
    private static string? GeluMismatch(JsonObject c, RunDescription run)
    {
        string value = Value(c, "activation_function", TanhGelu);
        bool tanh = TanhGelus.Contains(value);
        if (value != "gelu" && !tanh) return $"config.json's activation_function is {value}; the executor runs GeLU as tanh's approximation ({TanhGelu}, Megatron's fused bias-GeLU) or erf's (gelu, with --no-bias-gelu-fusion).";
        if (tanh == run.FusedElementwise) return null;
        return tanh
            ? $"config.json's activation_function is {value} (tanh's GeLU); this run's --no-bias-gelu-fusion runs erf's: drop the --no-*-fusion flags."
            : "config.json's activation_function is gelu (erf's GeLU); this run's fused bias-GeLU is tanh's: add --no-masked-softmax-fusion --no-bias-gelu-fusion --no-bias-dropout-fusion.";
    }
}
