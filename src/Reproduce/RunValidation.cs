using System.Text.Json;
using System.Text.Json.Serialization;
using Harness.Simulator;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>A run folder that cannot be compared, with one sentence saying why.</summary>
public sealed class RunValidationException(string message) : Exception(message);

/// <summary>
/// A real run beside the simulator's estimate of the same run: does the model of the machine match what the machine did?
/// Reads the run's summary.json (medians after warm-up; written by `harness run`), takes its model and its run description
/// as run, and estimates exactly that description on the GPU preset its settings name (or the one given), with today's
/// constants. Memory: the caching allocator's peak allocated bytes (torch.cuda.max_memory_allocated, where the run could read
/// them) beside the simulator's allocated peak, and the device memory in use (NVML: CUDA context plus the allocator's
/// reserve) beside the simulator's reservation.
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
    StepEstimate Estimate,
    long? MeasuredAllocatedPeakBytes = null,
    bool Deterministic = false)
{
    /// <summary>Simulated over measured allocated peak, minus one (positive: the simulator expects more memory than the run
    /// allocated); null when the run could not read its allocator's statistics.</summary>
    public double? MemoryError => MeasuredAllocatedPeakBytes is long m && m > 0 ? (double)Estimate.PeakMemoryBytes / m - 1 : null;

    /// <summary>Simulated over measured throughput, minus one, as `harness reproduce` counts errors: positive when the
    /// simulator expects the run to be faster than it was.</summary>
    public double Error => MeasuredStepSeconds / Estimate.StepTimeSeconds - 1;

    /// <summary>
    /// The GPU idled most of the step (under 1% MFU): the step is the host's loop launching kernels, which the
    /// simulator, a model of the GPUs and their links, does not describe. Such runs are listed, not averaged.
    /// </summary>
    public bool LaunchBound => MeasuredMfu is double m && m < 0.01;

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNameCaseInsensitive = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Compares the run in <paramref name="folder"/> (its summary.json) with its estimate; <paramref name="gpu"/>
    /// replaces the preset the run named.</summary>
    public static RunValidation Of(string folder, GpuSpec? gpu = null) => SummaryRun.Compare(folder, "estimate this run", (root, ran) =>
    {
        if (ran.Device != ExecutionDevice.Cuda)
            throw new RunValidationException($"{folder} ran on CPU; the simulator models GPUs, so there is nothing to compare.");
        if (ran.RanksOnOneDevice)
            throw new RunValidationException($"{folder} ran its {ran.Description.WorldSize} ranks on one device (--ranks-on-one-device); its times and memory are not a cluster's, so there is nothing to compare.");
        var preset = gpu ?? Preset(ran.Gpu, folder);
        int world = ran.Description.WorldSize;
        var estimate = Estimator.Estimate(ran.Model, new ClusterSpec(preset, world, Math.Min(world, preset.GpusPerNode)), ran.Description);
        double? mfu = root.GetProperty("Mfu").ValueKind == JsonValueKind.Number ? root.GetProperty("Mfu").GetDouble() : null;
        return new RunValidation(Path.GetFileName(Path.TrimEndingDirectorySeparator(folder)), root.GetProperty("Device").GetString() ?? "?",
            preset.Name, ran.Model, ran.Description, root.GetProperty("MedianStepMs").GetDouble() / 1e3, mfu, root.GetProperty("PeakMemoryBytes").GetInt64(), estimate,
            root.TryGetProperty("PeakAllocatedBytes", out var allocated) && allocated.ValueKind == JsonValueKind.Number ? allocated.GetInt64() : null,
            ran.DeterministicMode);
    });

    /// <summary>The GPU preset the run's MFU was counted against, by name, with today's constants.</summary>
    internal static GpuSpec Preset(string? name, string folder)
    {
        if (name is null)
            throw new RunValidationException($"{folder}: the run names no GPU preset; pass --gpu ({string.Join(", ", GpuPresets.All.Keys)}).");
        return GpuPresets.All.TryGetValue(name, out var preset)
            ? preset
            : throw new RunValidationException($"{folder}: the run's GPU '{name}' is not a preset; pass --gpu ({string.Join(", ", GpuPresets.All.Keys)}).");
    }
}

/// <summary>What a summary says ran: the model, the run description as run, the device kind and the GPU preset named, and
/// whether its ranks shared one device and its kernels had to be deterministic (--deterministic-mode).</summary>
public sealed record SummaryRun(ModelSpec Model, RunDescription Description, ExecutionDevice Device, string? Gpu, bool RanksOnOneDevice = false,
    bool DeterministicMode = false)
{
    /// <summary>What a summary.json's root says ran: a summary as `harness run` writes it, or one recorded before the run
    /// description (<see cref="LegacyRunSummary"/>). Every summary is a run of this project's executor, costed with its own
    /// kernels (<see cref="TransformerImpl.Harness"/>), also where it was recorded before the description named them.</summary>
    public static SummaryRun Of(JsonElement root)
    {
        var run = root.TryGetProperty("Config", out var config) ? LegacyRunSummary.Read(root, config) : Read(root);
        return run with { Description = run.Description with { Implementation = TransformerImpl.Harness } };
    }

    /// <summary>
    /// What <paramref name="compare"/> makes of the run in <paramref name="folder"/> (a harness run --out folder): its
    /// summary.json's root and what it says ran. A summary that is not one, or a run the simulator refuses, is one
    /// sentence naming the file (<see cref="RunValidationException"/>); <paramref name="simulatorCannot"/> says what the
    /// simulator could not do.
    /// </summary>
    public static T Compare<T>(string folder, string simulatorCannot, Func<JsonElement, SummaryRun, T> compare)
    {
        string path = System.IO.Path.Combine(folder, "summary.json");
        if (!System.IO.File.Exists(path)) throw new RunValidationException($"{folder} holds no summary.json (a harness run --out folder has one).");
        JsonElement root;
        try { root = JsonDocument.Parse(System.IO.File.ReadAllText(path)).RootElement; }
        catch (JsonException e) { throw new RunValidationException($"{path} is not valid JSON{JsonFileProblem.Describe(e, typeof(JsonElement))}"); }
        try { return compare(root, Of(root)); }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or JsonException or NullReferenceException)
        {
            throw new RunValidationException($"{path} is not a harness run summary ({e.Message.Split('\n')[0]}).");
        }
        catch (InvalidConfigException e)
        {
            throw new RunValidationException($"{path}: the simulator cannot {simulatorCannot}: {e.Message}");
        }
    }

    /// <summary>A summary as `harness run` writes it: its Model, Description (as run) and Settings, each once.</summary>
    private static SummaryRun Read(JsonElement root)
    {
        var settings = root.GetProperty("Settings").Deserialize<RunSettings>(RunValidation.Json)!;
        var description = root.GetProperty("Description");
        return new SummaryRun(root.GetProperty("Model").Deserialize<ModelSpec>(RunValidation.Json)!,
            LegacyRunSummary.WithoutLaterKernels(description, description.Deserialize<RunDescription>(RunValidation.Json)!), settings.Device, settings.Gpu,
            settings.RanksOnOneDevice, settings.DeterministicMode);
    }
}
