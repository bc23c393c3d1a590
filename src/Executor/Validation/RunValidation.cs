using System.Text.Json;
using System.Text.Json.Serialization;
using Harness.Simulator;
using Harness.Simulator.Specs;

namespace Harness.Executor.Validation;

/// <summary>A run folder that cannot be compared, with one sentence saying why.</summary>
public sealed class RunValidationException(string message) : Exception(message);

/// <summary>
/// A real run beside the simulator's estimate of the same (model, GPU, layout, batch): does the model of the machine
/// match what the machine did? Reads the run's summary.json (medians after warm-up), rebuilds its configuration in
/// the simulator's terms (parallel layout as run, recomputation, gradient-accumulation fusion) on the GPU preset it
/// named, with today's constants, and estimates it. Memory compares two different measures: the run records the
/// device memory in use (NVML: CUDA context plus the caching allocator's reserve), the simulator the allocated peak.
/// </summary>
public sealed record RunValidation(
    string Run,
    string Device,
    string Gpu,
    ModelSpec Model,
    RunDescription Config,
    double MeasuredStepSeconds,
    double? MeasuredMfu,
    long MeasuredMemoryBytes,
    StepEstimate Estimate)
{
    /// <summary>Simulated over measured throughput, minus one, as `harness reproduce` counts errors: positive when the
    /// simulator expects the run to be faster than it was.</summary>
    public double Error => MeasuredStepSeconds / Estimate.StepTimeSeconds - 1;

    /// <summary>
    /// The GPU idled most of the step (under 1% MFU): the step is the host's loop launching kernels, which the
    /// simulator, a model of the GPUs and their links, does not describe. Such runs are listed, not averaged.
    /// </summary>
    public bool LaunchBound => MeasuredMfu is double m && m < 0.01;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNameCaseInsensitive = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Compares the run in <paramref name="folder"/> (its summary.json) with its estimate; <paramref name="gpu"/>
    /// replaces the preset the run named.</summary>
    public static RunValidation Of(string folder, GpuSpec? gpu = null)
    {
        string path = Path.Combine(folder, "summary.json");
        if (!File.Exists(path)) throw new RunValidationException($"{folder} holds no summary.json (a harness run --out folder has one).");
        JsonElement root;
        try { root = JsonDocument.Parse(File.ReadAllText(path)).RootElement; }
        catch (JsonException e) { throw new RunValidationException($"{path} is not valid JSON{SpecJson.Describe(e)}"); }
        try
        {
            var config = root.GetProperty("Config");
            if (config.GetProperty("Device").GetString() != "Cuda")
                throw new RunValidationException($"{folder} ran on CPU; the simulator models GPUs, so there is nothing to compare.");
            var model = config.GetProperty("Model").Deserialize<ModelSpec>(Json)! with { HiddenDropout = Probability(config, "HiddenDropout"), AttentionDropout = Probability(config, "AttentionDropout") };
            var preset = gpu ?? Preset(config, folder);
            var layout = Layout(root, config);
            var cluster = new ClusterSpec(preset, layout.WorldSize, Math.Min(layout.WorldSize, preset.GpusPerNode));
            var estimate = Estimator.Estimate(model, cluster, layout);
            double? mfu = root.GetProperty("Mfu").ValueKind == JsonValueKind.Number ? root.GetProperty("Mfu").GetDouble() : null;
            return new RunValidation(Path.GetFileName(Path.TrimEndingDirectorySeparator(folder)), root.GetProperty("Device").GetString() ?? "?",
                preset.Name, model, layout, root.GetProperty("MedianStepMs").GetDouble() / 1e3, mfu, root.GetProperty("PeakMemoryBytes").GetInt64(), estimate);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or JsonException)
        {
            throw new RunValidationException($"{path} is not a harness run summary ({e.Message.Split('\n')[0]}).");
        }
        catch (InvalidConfigException e)
        {
            throw new RunValidationException($"{path}: the simulator cannot estimate this run: {e.Message}");
        }
    }

    /// <summary>Whether the run applied dropout (its --hidden-dropout or --attention-dropout above 0); runs recorded before
    /// the executor had dropout trained without it, whatever their model spec said.</summary>
    private static double Probability(JsonElement config, string name) =>
        config.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : 0;

    /// <summary>The GPU preset the run's MFU was counted against, by name, with today's constants.</summary>
    private static GpuSpec Preset(JsonElement config, string folder)
    {
        if (!config.TryGetProperty("Gpu", out var g) || g.ValueKind != JsonValueKind.Object)
            throw new RunValidationException($"{folder}: the run names no GPU preset; pass --gpu ({string.Join(", ", GpuPresets.All.Keys)}).");
        string name = g.GetProperty("Name").GetString() ?? "";
        return GpuPresets.All.TryGetValue(name, out var preset)
            ? preset
            : throw new RunValidationException($"{folder}: the run's GPU '{name}' is not a preset; pass --gpu ({string.Join(", ", GpuPresets.All.Keys)}).");
    }

    /// <summary>The layout as run: a parallel run records its RunDescription; a single-device run is one rank with its
    /// micro-batch, global batch, recomputation and precision. Gradient-accumulation fusion as recorded (runs made before
    /// it existed folded their gradients).</summary>
    private static RunDescription Layout(JsonElement root, JsonElement config)
    {
        if (root.TryGetProperty("Parallel", out var parallel) && parallel.ValueKind == JsonValueKind.Object)
            return parallel.Deserialize<RunDescription>(Json)!;
        var recompute = config.GetProperty("Recompute").GetString() switch
        {
            "Full" => RecomputeSpec.FullUniform(),
            "Selective" => RecomputeSpec.Selective,
            _ => RecomputeSpec.None,
        };
        bool fused = config.TryGetProperty("GradientAccumulationFusion", out var f) && f.GetBoolean();
        return new RunDescription(MicroBatch: config.GetProperty("MicroBatchSize").GetInt32(), GlobalBatch: config.GetProperty("GlobalBatchSize").GetInt32(),
            Recompute: recompute, Precision: config.GetProperty("Bf16").GetBoolean() ? Precision.Bf16 : Precision.Fp32, GradientAccumulationFusion: fused);
    }
}
