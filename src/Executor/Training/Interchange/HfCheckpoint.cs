using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training.Interchange;

/// <summary>
/// A Hugging Face model folder: config.json and the weights in model.safetensors, or in the shards a
/// model.safetensors.index.json's weight_map names (how transformers' save_pretrained splits large models). Written from the
/// serial model's full weights (<see cref="Write"/>) and read back into them (<see cref="Read"/>) for a run whose flags the
/// config matches (<see cref="Check"/>). Every problem is an InvalidDataException or FileNotFoundException with one sentence.
/// </summary>
public static class HfCheckpoint
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";
    private const string IndexFile = "model.safetensors.index.json";

    /// <summary>Writes the folder from the serial model's full weights (tables padded or not) of <paramref name="model"/> (its
    /// tokenizer's vocabulary); returns the architecture and the tensors written.</summary>
    public static (HfLayout Layout, IReadOnlyList<(string Name, Tensor Tensor)> Tensors) Write(string dir, IReadOnlyList<(string Name, Tensor Weight)> serial,
        ModelSpec model, RunDescription run, IReadOnlyDictionary<string, string> metadata)
    {
        var (layout, why) = HfLayout.For(model);
        if (layout is null) throw new InvalidDataException($"Model {model.Name} has no Hugging Face architecture here: {why}.");
        var tensors = layout.ToHf(serial.ToDictionary(s => s.Name, s => s.Weight), model).ToList();
        Directory.CreateDirectory(dir);
        SafeTensors.Write(Path.Combine(dir, WeightsFile), tensors, new Dictionary<string, string>(metadata) { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(dir, ConfigFile), layout.Config(model, run).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        return (layout, tensors);
    }

    /// <summary>Throws unless <paramref name="dir"/> is a Hugging Face model folder whose config.json describes <paramref name="model"/>
    /// (its tokenizer's vocabulary) in an architecture the executor reads, with weights beside it.</summary>
    public static void Check(string dir, ModelSpec model, RunDescription run)
    {
        var (config, layout) = Config(dir);
        var (own, why) = HfLayout.For(model);
        if (own is null) throw new InvalidDataException($"--load-format hf: this run's model reads no Hugging Face architecture: {why}.");
        if (own.ModelType != layout.ModelType)
            throw new InvalidDataException($"{Path.Combine(dir, ConfigFile)} has model_type {layout.ModelType}; this run's flags build a {own.ModelType} model.");
        if (layout.Mismatches(config, model, run).FirstOrDefault() is string mismatch) throw new InvalidDataException($"--load {dir}: {mismatch}");
        _ = WeightFiles(dir);
    }

    /// <summary>The model flags of the folder's config.json (<see cref="HfLayout.ModelFlags"/>); null when it has none that reads,
    /// which <see cref="Check"/> then says in a sentence.</summary>
    public static IReadOnlyList<string>? ModelFlags(string dir)
    {
        try { var (config, layout) = Config(dir); return layout.ModelFlags(config).ToList(); }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>The serial model's full float32 weights from the folder, by serial name, the tables padded to <paramref name="padded"/>'s
    /// vocabulary; its tokenizer's is config.json's vocab_size (<see cref="Check"/> matched it to the run's).</summary>
    public static IReadOnlyDictionary<string, Tensor> Read(string dir, ModelSpec padded)
    {
        var (config, layout) = Config(dir);
        int vocab = config["vocab_size"]?.GetValue<int>() ?? throw new InvalidDataException($"{Path.Combine(dir, ConfigFile)} has no vocab_size.");
        var hf = new Dictionary<string, Tensor>();
        foreach (var file in WeightFiles(dir))
            foreach (var (name, t) in SafeTensors.Read(file).Tensors)
                hf[Canonical(name, layout)] = t;
        return layout.FromHf(hf, padded with { VocabSize = vocab }, padded.VocabSize).ToDictionary(w => w.Name, w => w.Tensor);
    }

    /// <summary>GPT-2's published files hold the base model's names (wte.weight, h.0...): transformers adds its base_model_prefix,
    /// "transformer", when it loads them into GPT2LMHeadModel, and so does this.</summary>
    private static string Canonical(string name, HfLayout layout) =>
        layout is Gpt2Layout && !name.StartsWith("transformer.", StringComparison.Ordinal) && !name.StartsWith("lm_head.", StringComparison.Ordinal)
            ? "transformer." + name : name;

    /// <summary>config.json and the architecture its model_type names.</summary>
    private static (JsonObject Config, HfLayout Layout) Config(string dir)
    {
        if (!Directory.Exists(dir)) throw new FileNotFoundException($"--load {dir} is not a folder; --load-format hf reads a Hugging Face model folder (config.json, model.safetensors).");
        string path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"--load {dir} has no {ConfigFile}; it is not a Hugging Face model folder.", path);
        JsonObject config;
        try { config = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path} is not a JSON object."); }
        catch (JsonException) { throw new InvalidDataException($"{path} is not JSON."); }
        string? type = config["model_type"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        var layout = HfLayout.All.FirstOrDefault(l => l.ModelType == type)
            ?? throw new InvalidDataException($"{path} has model_type {type ?? "(none)"}; harness reads {string.Join(" and ", HfLayout.All.Select(l => l.ModelType))}.");
        return (config, layout);
    }

    /// <summary>The safetensors files of the folder: model.safetensors, or the shards its index names.</summary>
    private static IReadOnlyList<string> WeightFiles(string dir)
    {
        string single = Path.Combine(dir, WeightsFile), index = Path.Combine(dir, IndexFile);
        if (File.Exists(single)) return [single];
        if (!File.Exists(index))
            throw new FileNotFoundException($"--load {dir} has neither {WeightsFile} nor {IndexFile}; harness reads safetensors weights only.", single);
        try
        {
            var map = JsonNode.Parse(File.ReadAllText(index))!["weight_map"]!.AsObject();
            var files = map.Select(kv => Path.Combine(dir, kv.Value!.GetValue<string>())).Distinct().ToList();
            return files.FirstOrDefault(f => !File.Exists(f)) is string missing
                ? throw new FileNotFoundException($"{index} names {Path.GetFileName(missing)}, which {dir} does not hold.", missing)
                : files;
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException)
        {
            throw new InvalidDataException($"{index} has no weight_map of tensor names to files.");
        }
    }
}
