using TorchSharp;
using System.Buffers.Binary;
using System.Text;
using Harness.Executor.Native;
using Harness.Executor.TensorParallel;
using Harness.Executor.Training.Interchange;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

// References written with libtorch's own matmul (Native.MatrixProduct says why the executor does not call it; a test's small
// CPU tensors do not run out of memory).
#pragma warning disable RS0030

namespace Harness.Tests.Executor;

/// <summary>
/// The Hugging Face interchange in process: the safetensors format against a file written byte by byte; the exported tensors
/// computing what the serial model computes when run as transformers runs GPT2LMHeadModel and LlamaForCausalLM (a forward
/// written here from modeling_gpt2.py and modeling_llama.py, in libtorch's operators); a folder written and read back giving
/// the same weights bit for bit, with Megatron's vocabulary padding cut on the way out and the last row repeated on the way in.
/// </summary>
public class HfInterchangeTests
{
    private static readonly ModelSpec Llama = new("tiny-llama", 2, 32, 4, 2, 48, 64, 16, Activation.SwiGlu, Normalization.RmsNorm,
        PositionEmbedding.Rotary, false, HiddenDropout: 0, AttentionDropout: 0, NormEpsilon: 1e-5, RotaryBase: 500000);

    private static readonly ModelSpec Gpt = new("tiny-gpt", 2, 32, 4, 4, 64, 64, 16, Activation.Gelu, Normalization.LayerNorm,
        PositionEmbedding.Learned, true, HiddenDropout: 0, AttentionDropout: 0, MaxPositionEmbeddings: 20);

    [Fact]
    public void AHandWrittenSafetensorsFileParses()
    {
        TorchRuntime.Initialize();
        // Two tensors and metadata, laid out as the format's README describes: u64 header length, JSON, raw little-endian data.
        string json = """{"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}""";
        var data = new byte[12];
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(0), 1.5f);
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4), -2f);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(8), 0x3F80);  // bf16 1.0
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(10), 0xC040); // bf16 -3.0
        string path = Path.Combine(TestTemp.Root, $"harness-st-{Guid.NewGuid():N}.safetensors");
        try
        {
            var header = Encoding.UTF8.GetBytes(json);
            var length = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            File.WriteAllBytes(path, [.. length, .. header, .. data]);
            var (tensors, metadata) = SafeTensors.Read(path);
            Assert.Equal(["b", "a"], tensors.Select(t => t.Name));
            Assert.Equal("pt", metadata["format"]);
            var a = tensors.Single(t => t.Name == "a").Tensor;
            Assert.Equal([2L, 1L], a.shape);
            Assert.Equal([1.5f, -2f], a.data<float>().ToArray());
            var b = tensors.Single(t => t.Name == "b").Tensor;
            Assert.Equal(ScalarType.BFloat16, b.dtype);
            Assert.Equal([1f, -3f], b.to(ScalarType.Float32).data<float>().ToArray());

            // Written back by the writer, the same bytes of data and a header it reads again.
            string again = path + ".2";
            SafeTensors.Write(again, tensors, metadata);
            var bytes = File.ReadAllBytes(again);
            ulong written = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.Equal(0UL, written % 8);
            Assert.Equal(data[8..].Concat(data[..8]), bytes[(8 + (int)written)..]); // in the order given: b, then a
            Assert.Equal(tensors.Select(t => t.Name), SafeTensors.Read(again).Tensors.Select(t => t.Name));
            File.Delete(again);

            // A header length past the end of the file is one sentence.
            BinaryPrimitives.WriteUInt64LittleEndian(length, 1000);
            File.WriteAllBytes(path, [.. length, .. header, .. data]);
            var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
            Assert.Equal($"{path} is not a safetensors file: its header length 1000 runs past the file's {8 + header.Length + data.Length} bytes.", e.Message);
            // Offsets that do not hold the shape's bytes.
            File.WriteAllBytes(path, [.. Length(json.Replace("[0,8]", "[0,4]")), .. Encoding.UTF8.GetBytes(json.Replace("[0,8]", "[0,4]")), .. data]);
            e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
            Assert.Contains("tensor 'a' has data_offsets [0, 4], not 8 bytes", e.Message);
        }
        finally { File.Delete(path); }
    }

    private static byte[] Length(string json)
    {
        var length = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)Encoding.UTF8.GetByteCount(json));
        return length;
    }

    /// <summary>The serial model of <paramref name="spec"/> with weights large enough that attention is far from uniform (a wrong
    /// head order or rotation shows), and its weights by serial name.</summary>
    /// <param name="fused">Megatron's element-wise fusions: GPT's bias-GeLU is tanh's approximation with them, erf's without.</param>
    private static (GptModel Model, Dictionary<string, Tensor> Weights) Model(ModelSpec spec, bool fused = true)
    {
        TorchRuntime.Initialize();
        var model = new GptModel(new TransformerConfig(spec, CPU, ScalarType.Float32, SerialTensorParallel.Instance, InitSeed: 3, FusedElementwise: fused));
        using var generator = new Generator(11);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                p.copy_(randn(p.shape, generator: generator).Times(p.dim() >= 2 ? 0.3 : 0.1).Plus(name.Contains("norm") && name.EndsWith("weight") ? 1 : 0));
        return (model, model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone()));
    }

    private static Tensor Tokens(ModelSpec spec)
    {
        using var generator = new Generator(5);
        return randint(0, spec.VocabSize, [2, spec.SeqLength], generator: generator);
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt2")]
    [InlineData("gpt2-erf")]
    public void TheExportedTensorsComputeWhatTheModelComputesAsTransformersRunsThem(string type)
    {
        var spec = type == "llama" ? Llama : Gpt;
        bool fused = type != "gpt2-erf";
        var (model, weights) = Model(spec, fused);
        var tokens = Tokens(spec);
        var layout = HfLayout.For(spec).Layout!;
        var hf = layout.ToHf(weights, spec).ToDictionary(t => t.Name, t => t.Tensor);
        // config.json names the GeLU the model computed, and transformers computes that one.
        string activation = layout.Config(spec, new RunDescription(FusedElementwise: fused))["activation_function"]?.GetValue<string>() ?? "";
        if (type != "llama") Assert.Equal(fused ? "gelu_new" : "gelu", activation);
        using var _ = no_grad();
        var ours = model.Decode(model.Embed(tokens));
        var theirs = type == "llama" ? LlamaHidden(hf, spec, tokens) : Gpt2Hidden(hf, spec, tokens, activation);
        double scale = ours.abs().max().item<float>();
        Assert.True(scale > 0.5, $"hidden states of size {scale}");
        Assert.True((ours - theirs).abs().max().item<float>() <= 1e-5 * scale, $"max difference {(ours - theirs).abs().max().item<float>()}");

        // The comparison sees a wrong mapping: Q and K of the first layer exchanged (Llama) or its heads' Q in reverse (GPT-2).
        if (type == "llama")
            (hf["model.layers.0.self_attn.q_proj.weight"], hf["model.layers.0.self_attn.k_proj.weight"]) =
                (cat([hf["model.layers.0.self_attn.k_proj.weight"], hf["model.layers.0.self_attn.k_proj.weight"]], 0), hf["model.layers.0.self_attn.q_proj.weight"].narrow(0, 0, 16));
        else hf["transformer.h.0.attn.c_attn.weight"] = cat([hf["transformer.h.0.attn.c_attn.weight"].narrow(1, 0, 32).flip(1), hf["transformer.h.0.attn.c_attn.weight"].narrow(1, 32, 64)], 1);
        var wrong = type == "llama" ? LlamaHidden(hf, spec, tokens) : Gpt2Hidden(hf, spec, tokens, activation);
        Assert.True((ours - wrong).abs().max().item<float>() > 1e-2 * scale);
    }

    /// <summary>Causal attention over heads [b, a, s, d] with softmax(QKᵀ/√d)·V, merged back to [b, s, a·d] (both models' eager attention).</summary>
    private static Tensor Attention(Tensor q, Tensor k, Tensor v)
    {
        long s = q.shape[2], d = q.shape[3];
        var scores = matmul(q, k.transpose(2, 3)).Over(Math.Sqrt(d));
        scores = scores.FilledWhere(ones(s, s, dtype: ScalarType.Bool).triu(1), double.NegativeInfinity);
        var context = matmul(softmax(scores, -1), v);
        return context.transpose(1, 2).reshape(q.shape[0], s, q.shape[1] * d);
    }

    private static Tensor Heads(Tensor x, long heads) => x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2);

    /// <summary>LlamaModel's last hidden state (modeling_llama.py): RMSNorm in float32, rotate_half rotary with inv_freq =
    /// 1/θ^(2i/d) on cat(freqs, freqs), repeat_kv (head h reads key group h / (a/g)), o_proj, then SiLU(gate)·up through down_proj.</summary>
    private static Tensor LlamaHidden(Dictionary<string, Tensor> w, ModelSpec m, Tensor tokens)
    {
        Tensor Rms(Tensor x, string name) => x * rsqrt((x * x).mean([-1], keepdim: true).Plus(m.NormEpsilon)) * w[name];
        long s = tokens.shape[1], d = m.HeadDim, rep = m.NumAttentionHeads / m.NumQueryGroups;
        using Scalar zero = 0.ToScalar(), end = d.ToScalar(), two = 2.ToScalar();
        using var @base = tensor(m.RotaryBase);
        var inv = @base.pow(arange(zero, end, two, dtype: ScalarType.Float32).Over(d)).reciprocal();
        var freqs = outer(HeldScalars.Positions(0, s).to(ScalarType.Float32), inv);
        var emb = cat([freqs, freqs], -1);
        Tensor cos = emb.cos(), sin = emb.sin();
        Tensor Rotate(Tensor x) => (x * cos).Plus(cat([-x.narrow(-1, d / 2, d / 2), x.narrow(-1, 0, d / 2)], -1) * sin);
        var h = w["model.embed_tokens.weight"].index_select(0, tokens.reshape(-1)).view(tokens.shape[0], s, -1);
        for (int i = 0; i < m.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            var x = Rms(h, p + "input_layernorm.weight");
            var q = Rotate(Heads(nn.functional.linear(x, w[p + "self_attn.q_proj.weight"]), m.NumAttentionHeads));
            var k = Rotate(Heads(nn.functional.linear(x, w[p + "self_attn.k_proj.weight"]), m.NumQueryGroups)).repeat_interleave(rep, 1);
            var v = Heads(nn.functional.linear(x, w[p + "self_attn.v_proj.weight"]), m.NumQueryGroups).repeat_interleave(rep, 1);
            h = h.Plus(nn.functional.linear(Attention(q, k, v), w[p + "self_attn.o_proj.weight"]));
            var y = Rms(h, p + "post_attention_layernorm.weight");
            h = h.Plus(nn.functional.linear(nn.functional.silu(nn.functional.linear(y, w[p + "mlp.gate_proj.weight"])) * nn.functional.linear(y, w[p + "mlp.up_proj.weight"]),
                w[p + "mlp.down_proj.weight"]));
        }
        return Rms(h, "model.norm.weight");
    }

    /// <summary>GPT2Model's last hidden state (modeling_gpt2.py): Conv1D linears, y = x·W + b with W [in, out]; c_attn's output
    /// split into Q, K, V of n_embd each, then heads; GeLU as activation_function names it: "gelu" erf's exact form, "gelu_new"
    /// tanh's approximation, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (activations.py, NewGELUActivation).</summary>
    private static Tensor Gpt2Hidden(Dictionary<string, Tensor> w, ModelSpec m, Tensor tokens, string activation)
    {
        Tensor Gelu(Tensor x) => activation == "gelu" ? nn.functional.gelu(x)
            : x.Times(0.5) * tanh(x.Plus((x * x * x).Times(0.044715)).Times(Math.Sqrt(2.0 / Math.PI))).Plus(1.0);
        Tensor Conv1D(Tensor x, string name) => matmul(x, w[name + ".weight"]).Plus(w[name + ".bias"]);
        Tensor Ln(Tensor x, string name) => nn.functional.layer_norm(x, [m.HiddenSize], w[name + ".weight"], w[name + ".bias"], m.NormEpsilon);
        long s = tokens.shape[1];
        var h = w["transformer.wte.weight"].index_select(0, tokens.reshape(-1)).view(tokens.shape[0], s, -1).Plus(w["transformer.wpe.weight"].narrow(0, 0, s));
        for (int i = 0; i < m.NumLayers; i++)
        {
            string p = $"transformer.h.{i}.";
            var qkv = Conv1D(Ln(h, p + "ln_1"), p + "attn.c_attn").split(m.HiddenSize, -1);
            h = h.Plus(Conv1D(Attention(Heads(qkv[0], m.NumAttentionHeads), Heads(qkv[1], m.NumAttentionHeads), Heads(qkv[2], m.NumAttentionHeads)), p + "attn.c_proj"));
            h = h.Plus(Conv1D(Gelu(Conv1D(Ln(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj"));
        }
        return Ln(h, "transformer.ln_f");
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt2")]
    public void AFolderWrittenAndReadBackGivesTheSameForwardBitForBit(string type)
    {
        var spec = type == "llama" ? Llama : Gpt;
        var (model, weights) = Model(spec);
        var tokens = Tokens(spec);
        var labels = tokens.roll(-1, 1);
        string dir = Path.Combine(TestTemp.Root, $"harness-hf-{Guid.NewGuid():N}");
        try
        {
            HfCheckpoint.Write(dir, [.. weights.Select(kv => (kv.Key, kv.Value))], spec, new RunDescription(), new Dictionary<string, string>());
            HfCheckpoint.Check(dir, spec, new RunDescription());
            // The other GeLU is one sentence naming the flags that would compute the folder's.
            if (type == "gpt2")
                Assert.Contains("this run's --no-bias-gelu-fusion runs erf's",
                    Assert.Throws<InvalidDataException>(() => HfCheckpoint.Check(dir, spec, new RunDescription(FusedElementwise: false))).Message);
            var read = HfCheckpoint.Read(dir, spec);
            Assert.Equal(weights.Keys.Order(), read.Keys.Order());
            foreach (var (name, t) in weights) Assert.True(Same(t, read[name]), name);
            using var _ = no_grad();
            var (again, _) = Model(spec);
            foreach (var (name, p) in again.named_parameters()) p.copy_(read[name]);
            Assert.Equal(model.forward(tokens, labels).item<float>(), again.forward(tokens, labels).item<float>());
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }

    /// <summary>The same shape and every element equal, bit for bit.</summary>
    internal static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void TheVocabularyPaddingIsCutOnExportAndTheLastRowRepeatedOnImport()
    {
        // The model's tables padded from 64 to 128 rows (Megatron's --make-vocab-size-divisible-by 128).
        var padded = VocabPadding.Pad(Llama, 128, 1);
        var (_, weights) = Model(padded);
        string dir = Path.Combine(TestTemp.Root, $"harness-hf-{Guid.NewGuid():N}");
        try
        {
            HfCheckpoint.Write(dir, [.. weights.Select(kv => (kv.Key, kv.Value))], Llama, new RunDescription(), new Dictionary<string, string>());
            var (tensors, _) = SafeTensors.Read(Path.Combine(dir, HfCheckpoint.WeightsFile));
            Assert.Equal([64L, 32L], tensors.Single(t => t.Name == "model.embed_tokens.weight").Tensor.shape);
            Assert.Equal([64L, 32L], tensors.Single(t => t.Name == "lm_head.weight").Tensor.shape);
            var read = HfCheckpoint.Read(dir, padded);
            foreach (var table in new[] { "word_embeddings", "output_layer" })
            {
                Assert.Equal([128L, 32L], read[table].shape);
                Assert.True(Same(read[table].narrow(0, 0, 64), weights[table].narrow(0, 0, 64)), table);
                Assert.True(Same(read[table].narrow(0, 64, 64), weights[table].narrow(0, 63, 1).expand(64, 32)), table);
            }
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }
}
