using System.Text.Json;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>
/// The summaries `harness run` wrote before it recorded the run description as run (those committed under results/): the
/// executor's options in "Config" (model, device, bf16, batch sizes, recomputation granularity, GPU preset, fusions,
/// dropout) and, for parallel runs, the layout in "Parallel". Read here only, into what a summary says today.
/// </summary>
internal static class LegacyRunSummary
{
    public static SummaryRun Read(JsonElement root, JsonElement config)
    {
        // Runs recorded before the executor had dropout trained without it, whatever their model spec said.
        var model = config.GetProperty("Model").Deserialize<ModelSpec>(RunValidation.Json)! with
        {
            HiddenDropout = Probability(config, "HiddenDropout"), AttentionDropout = Probability(config, "AttentionDropout"),
        };
        var device = config.GetProperty("Device").GetString() == "Cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu;
        string? gpu = config.TryGetProperty("Gpu", out var g) && g.ValueKind == JsonValueKind.Object ? g.GetProperty("Name").GetString() ?? "" : null;
        return new SummaryRun(model, Layout(root, config), device, gpu);
    }

    /// <summary>A recorded description as run: one written before the GPT path's kernels existed (no FusedGptKernels field,
    /// which reads as its default, on) ran libtorch's operators there.</summary>
    public static RunDescription WithoutLaterKernels(JsonElement recorded, RunDescription d) =>
        recorded.TryGetProperty(nameof(RunDescription.FusedGptKernels), out _) ? d : d with { FusedGptKernels = false };

    private static double Probability(JsonElement config, string name) =>
        config.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : 0;

    /// <summary>The layout as run: a parallel run recorded its RunDescription; a single-device run is one rank with its
    /// micro-batch, global batch, recomputation and precision. Gradient-accumulation fusion as recorded (runs made before
    /// it existed folded their gradients); the executor's fused kernels likewise (runs made before them, or with them off,
    /// ran libtorch's operators, SwiGLU among them; runs made before the GPT path's kernels ran libtorch's there).</summary>
    private static RunDescription Layout(JsonElement root, JsonElement config)
    {
        if (root.TryGetProperty("Parallel", out var parallel) && parallel.ValueKind == JsonValueKind.Object)
        {
            var recorded = parallel.Deserialize<RunDescription>(RunValidation.Json)!;
            recorded = WithoutLaterKernels(parallel, recorded);
            return parallel.TryGetProperty(nameof(RunDescription.FusedKernels), out _) ? recorded : recorded with { FusedKernels = false, FusedSwiGlu = false };
        }
        var recompute = config.GetProperty("Recompute").GetString() switch
        {
            "Full" => RecomputeSpec.FullUniform(),
            "Selective" => RecomputeSpec.Selective,
            _ => RecomputeSpec.None,
        };
        bool fused = config.TryGetProperty("GradientAccumulationFusion", out var f) && f.GetBoolean();
        bool kernels = config.TryGetProperty(nameof(RunDescription.FusedKernels), out var k) && k.GetBoolean();
        var precision = config.GetProperty("Bf16").GetBoolean() ? Precision.Bf16 : Precision.Fp32;
        return new RunDescription(MicroBatch: config.GetProperty("MicroBatchSize").GetInt32(), GlobalBatch: config.GetProperty("GlobalBatchSize").GetInt32(),
            Recompute: recompute, Precision: precision, GradientAccumulationFusion: fused, FusedKernels: kernels,
            FusedSwiGlu: kernels && precision == Precision.Bf16, FusedGptKernels: false);
    }
}
