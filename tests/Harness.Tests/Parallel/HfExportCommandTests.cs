using System.Text.Json.Nodes;
using Harness.Cli;
using Harness.Executor.Training.Interchange;
using Harness.Tests.Executor;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// `harness export` and `harness run --load-format hf` from the command line, on CPU: the names and shapes a GPT-2 and a Llama
/// checkpoint export under (transformers' own); the checkpoints of parallel layouts exporting the serial run's tensors; a run
/// started from an exported folder holding its weights, serial or TP2 x PP2; bad input as one sentence and exit 2.
/// </summary>
[Collection("Console")]
public class HfExportCommandTests
{
    /// <summary>A run's flags besides the model's.</summary>
    private static readonly string[] Batch = ["--mock-data", "--micro-batch-size", "1", "--global-batch-size", "4", "--device", "cpu", "--lr", "3e-3", "--seed", "5"];

    private static readonly string[] Gpt =
    [
        "--num-layers", "2", "--hidden-size", "32", "--ffn-hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "16",
        "--vocab-size", "100", "--hidden-dropout", "0", "--attention-dropout", "0", .. Batch,
    ];

    private static readonly string[] Llama =
    [
        .. Gpt.Select(a => a == "64" ? "48" : a), "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
        "--untie-embeddings-and-output-weights", "--group-query-attention", "--num-query-groups", "2", "--rotary-base", "500000",
    ];

    private static (int Code, string Out, string Err) Harness(params string[] args)
    {
        var (code, output, err) = ConsoleCapture.Run(CommandTable.Dispatch, args);
        return (code, output, err.Trim());
    }

    private static string Temp() => Path.Combine(TestTemp.Root, $"harness-hfx-{Guid.NewGuid():N}");

    /// <summary>Trains <paramref name="model"/> under <paramref name="layout"/> and saves; returns the checkpoint folder.</summary>
    private static string Train(string root, string name, string[] model, string[] layout, params string[] extra)
    {
        string ckpt = Path.Combine(root, name);
        var (code, _, err) = Harness(["run", .. model, .. layout, "--train-iters", "2", "--save", ckpt, "--out", Path.Combine(root, name + "-out"), .. extra]);
        Assert.True(code == 0, err);
        return ckpt;
    }

    private static string Export(string root, string ckpt, string[] model, string[] layout)
    {
        string dir = ckpt + "-hf";
        var (code, output, err) = Harness(["export", .. model, .. layout, "--load", ckpt, "--out", dir]);
        Assert.True(code == 0, err);
        Assert.StartsWith($"harness export: wrote {Path.Combine(dir, "model.safetensors")} (", output);
        return dir;
    }

    private static Dictionary<string, Tensor> Tensors(string dir) =>
        SafeTensors.Read(Path.Combine(dir, "model.safetensors")).Tensors.ToDictionary(t => t.Name, t => t.Tensor);

    [Fact]
    public void AGpt2CheckpointExportsUnderGpt2LMHeadModelsNamesAndShapes()
    {
        string root = Temp();
        try
        {
            string dir = Export(root, Train(root, "gpt", Gpt, []), Gpt, []);
            // transformers' GPT2LMHeadModel of n_embd 32, n_inner 64, 2 layers, 16 positions, 100 tokens; Conv1D weights [in, out];
            // lm_head tied to wte and not stored. The run's tables were padded to 128 rows; the export holds the tokenizer's 100.
            var expected = new Dictionary<string, long[]> { ["transformer.wte.weight"] = [100, 32], ["transformer.wpe.weight"] = [16, 32],
                ["transformer.ln_f.weight"] = [32], ["transformer.ln_f.bias"] = [32] };
            for (int i = 0; i < 2; i++)
                foreach (var (name, shape) in new (string, long[])[] { ("ln_1.weight", [32]), ("ln_1.bias", [32]), ("attn.c_attn.weight", [32, 96]),
                    ("attn.c_attn.bias", [96]), ("attn.c_proj.weight", [32, 32]), ("attn.c_proj.bias", [32]), ("ln_2.weight", [32]), ("ln_2.bias", [32]),
                    ("mlp.c_fc.weight", [32, 64]), ("mlp.c_fc.bias", [64]), ("mlp.c_proj.weight", [64, 32]), ("mlp.c_proj.bias", [32]) })
                    expected[$"transformer.h.{i}.{name}"] = shape;
            AssertShapes(expected, Tensors(dir));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            Assert.Equal(("gpt2", "GPT2LMHeadModel"), (config["model_type"]!.GetValue<string>(), config["architectures"]![0]!.GetValue<string>()));
            Assert.Equal((32, 2, 4, 16, 100, 64), (config["n_embd"]!.GetValue<int>(), config["n_layer"]!.GetValue<int>(), config["n_head"]!.GetValue<int>(),
                config["n_positions"]!.GetValue<int>(), config["vocab_size"]!.GetValue<int>(), config["n_inner"]!.GetValue<int>()));
            // Megatron's fused bias-GeLU (the default) is tanh's approximation: GPT-2's own gelu_new.
            Assert.Equal((1e-5, "gelu_new", true, "float32"), (config["layer_norm_epsilon"]!.GetValue<double>(), config["activation_function"]!.GetValue<string>(),
                config["tie_word_embeddings"]!.GetValue<bool>(), config["torch_dtype"]!.GetValue<string>()));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void ALlamaCheckpointExportsUnderLlamaForCausalLMsNamesAndShapes()
    {
        string root = Temp();
        try
        {
            string dir = Export(root, Train(root, "llama", Llama, []), Llama, []);
            // 4 heads of 8 channels in 2 key/value groups: q_proj 32 rows, k_proj and v_proj 16; the MLP's 48 channels; untied lm_head.
            var expected = new Dictionary<string, long[]> { ["model.embed_tokens.weight"] = [100, 32], ["model.norm.weight"] = [32], ["lm_head.weight"] = [100, 32] };
            for (int i = 0; i < 2; i++)
                foreach (var (name, shape) in new (string, long[])[] { ("input_layernorm.weight", [32]), ("self_attn.q_proj.weight", [32, 32]),
                    ("self_attn.k_proj.weight", [16, 32]), ("self_attn.v_proj.weight", [16, 32]), ("self_attn.o_proj.weight", [32, 32]),
                    ("post_attention_layernorm.weight", [32]), ("mlp.gate_proj.weight", [48, 32]), ("mlp.up_proj.weight", [48, 32]), ("mlp.down_proj.weight", [32, 48]) })
                    expected[$"model.layers.{i}.{name}"] = shape;
            AssertShapes(expected, Tensors(dir));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            Assert.Equal(("llama", "LlamaForCausalLM"), (config["model_type"]!.GetValue<string>(), config["architectures"]![0]!.GetValue<string>()));
            Assert.Equal((32, 48, 2, 4, 2, 8, 100), (config["hidden_size"]!.GetValue<int>(), config["intermediate_size"]!.GetValue<int>(),
                config["num_hidden_layers"]!.GetValue<int>(), config["num_attention_heads"]!.GetValue<int>(), config["num_key_value_heads"]!.GetValue<int>(),
                config["head_dim"]!.GetValue<int>(), config["vocab_size"]!.GetValue<int>()));
            Assert.Equal((1e-5, 500000.0, 16, false, "silu"), (config["rms_norm_eps"]!.GetValue<double>(), config["rope_theta"]!.GetValue<double>(),
                config["max_position_embeddings"]!.GetValue<int>(), config["tie_word_embeddings"]!.GetValue<bool>(), config["hidden_act"]!.GetValue<string>()));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    private static void AssertShapes(Dictionary<string, long[]> expected, Dictionary<string, Tensor> tensors)
    {
        Assert.Equal(expected.Keys.Order(), tensors.Keys.Order());
        foreach (var (name, shape) in expected) Assert.True(shape.SequenceEqual(tensors[name].shape), $"{name}: [{string.Join(", ", tensors[name].shape)}]");
        Assert.All(tensors.Values, t => Assert.Equal(ScalarType.Float32, t.dtype));
    }

    /// <summary>
    /// Checkpoints of parallel layouts (shards of tensor parallelism, pipeline stages even, uneven and interleaved, the
    /// distributed optimizer's data-parallel shards, ZeRO 3's) export exactly the serial run's tensors. At learning rate 0 the
    /// weights are the initial ones, which every layout draws as the serial model's slices (WeightInit), so any misplaced
    /// element shows; a trained TP2 x PP2 checkpoint matches the trained serial one within the layouts' arithmetic.
    /// </summary>
    [Theory]
    [InlineData("gpt", "--nproc-per-node 4 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2")]
    [InlineData("llama", "--nproc-per-node 4 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2")]
    [InlineData("llama", "--nproc-per-node 8 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --use-distributed-optimizer")]
    [InlineData("gpt", "--nproc-per-node 2 --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1")]
    [InlineData("llama", "--nproc-per-node 2 --pipeline-model-parallel-size 2 --decoder-first-pipeline-num-layers 1")]
    [InlineData("gpt", "--nproc-per-node 2 --zero-stage 3")]
    public void AParallelCheckpointExportsTheSerialRunsTensors(string family, string layoutLine)
    {
        // 4 layers, so the interleaved and uneven splits have layers to split; 128 tokens padded to 128 under t 1 and t 2 alike.
        string[] model = [.. (family == "gpt" ? Gpt : Llama).Select(a => a == "100" ? "128" : a), "--num-layers", "4", "--make-vocab-size-divisible-by", "64"];
        string[] layout = layoutLine.Split(' ');
        string root = Temp();
        try
        {
            var serial = Tensors(Export(root, Train(root, "serial", model, [], "--lr", "0"), model, []));
            var parallel = Tensors(Export(root, Train(root, "parallel", model, layout, "--lr", "0"), model, layout));
            Assert.Equal(serial.Keys.Order(), parallel.Keys.Order());
            foreach (var (name, t) in serial) Assert.True(HfInterchangeTests.Same(t, parallel[name]), name);
            if (layout.Contains("--tensor-model-parallel-size") && !layout.Contains("--use-distributed-optimizer"))
            {
                var trainedSerial = Tensors(Export(root, Train(root, "trained-serial", model, []), model, []));
                var trained = Tensors(Export(root, Train(root, "trained", model, layout), model, layout));
                foreach (var (name, t) in trainedSerial)
                {
                    Assert.False(HfInterchangeTests.Same(t, serial[name]) && name.Contains("weight") && t.dim() >= 2, $"{name} did not train");
                    double difference = (t - trained[name]).abs().max().item<float>();
                    Assert.True(difference <= 1e-5, $"{name}: {difference}");
                }
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    /// <summary>A run started from an exported folder (--load-format hf) holds its weights: at learning rate 0 its own checkpoint
    /// exports the same tensors, bit for bit, serial and as TP2 x PP2 (each rank cutting its shards), with the tables padded on
    /// the way in (the last row repeated) and cut again on the way out; and with no model flags at all, config.json gives the model.</summary>
    [Theory]
    [InlineData("gpt")]
    [InlineData("llama")]
    public void ARunFromAnExportedFolderStartsFromItsWeights(string family)
    {
        var model = family == "gpt" ? Gpt : Llama;
        string[] tp2pp2 = ["--nproc-per-node", "4", "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"];
        string root = Temp();
        try
        {
            string exported = Export(root, Train(root, "trained", model, []), model, []);
            var original = Tensors(exported);
            foreach (var (name, layout, flags) in new[] { ("serial", Array.Empty<string>(), model), ("tp2pp2", tp2pp2, model), ("inferred", [], [.. Batch, "--seq-length", "8"]) })
            {
                var again = Tensors(Export(root, Train(root, name, flags, layout, "--load", exported, "--load-format", "hf", "--lr", "0"), model, layout));
                Assert.Equal(original.Keys.Order(), again.Keys.Order());
                foreach (var (tensor, t) in original) Assert.True(HfInterchangeTests.Same(t, again[tensor]), $"{name}: {tensor}");
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void BadInputIsOneSentenceAndExitTwo()
    {
        string root = Temp();
        try
        {
            Directory.CreateDirectory(root);
            string empty = Path.Combine(root, "empty");
            Directory.CreateDirectory(empty);
            Assert.Equal((2, $"harness export: --load {empty} has no latest_checkpointed_iteration.txt; it is not a checkpoint folder written by --save."),
                Drop(Harness(["export", .. Gpt, "--load", empty, "--out", Path.Combine(root, "x")])));
            Assert.Equal((2, "harness export: give --out DIR, the folder to write config.json and model.safetensors in."),
                Drop(Harness(["export", .. Gpt, "--load", empty])));
            string ckpt = Train(root, "gpt", Gpt, []);
            Assert.Equal((2, $"harness export: The checkpoint in {Path.Combine(ckpt, "iter_0000002")} was saved with tensor 1 x pipeline 1 and this run is tensor 1 x pipeline 2; load it with the layout it was saved with."),
                Drop(Harness(["export", .. Gpt, "--nproc-per-node", "2", "--pipeline-model-parallel-size", "2", "--load", ckpt, "--out", Path.Combine(root, "x")])));
            string exported = Export(root, ckpt, Gpt, []);
            Assert.Equal((2, $"harness export: --out '{exported}' already holds a model.safetensors; pass another --out, or --overwrite to replace it."),
                Drop(Harness(["export", .. Gpt, "--load", ckpt, "--out", exported])));

            string[] fromHf = ["run", .. Gpt, "--train-iters", "1", "--out", Path.Combine(root, "o"), "--load-format", "hf"];
            Assert.Equal((2, $"harness run: --load {empty} has no config.json; it is not a Hugging Face model folder."), Drop(Harness([.. fromHf, "--load", empty])));
            Assert.Equal((2, "harness run: --load-format hf names what --load reads; give --load with a Hugging Face model folder."), Drop(Harness(fromHf)));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(exported, "config.json")))!.AsObject();
            config["n_embd"] = 48;
            File.WriteAllText(Path.Combine(exported, "config.json"), config.ToJsonString());
            Assert.Equal((2, $"harness run: --load {exported}: config.json's n_embd is 48; this run's --hidden-size is 32."), Drop(Harness([.. fromHf, "--load", exported])));
            config["model_type"] = "mistral";
            File.WriteAllText(Path.Combine(exported, "config.json"), config.ToJsonString());
            Assert.Equal((2, $"harness run: {Path.Combine(exported, "config.json")} has model_type mistral; harness reads gpt2 and llama."), Drop(Harness([.. fromHf, "--load", exported])));
            config["model_type"] = "llama";
            File.WriteAllText(Path.Combine(exported, "config.json"), config.ToJsonString());
            Assert.Equal((2, $"harness run: {Path.Combine(exported, "config.json")} has model_type llama; this run's flags build a gpt2 model."), Drop(Harness([.. fromHf, "--load", exported])));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    private static (int, string) Drop((int Code, string Out, string Err) r) => (r.Code, r.Err);
}
