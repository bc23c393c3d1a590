using System.Text.Json;
using Harness.Simulator;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>
/// One rank's Megatron-Kwai activation offload in a real run beside the simulator's count of it (`harness validate
/// --offload`): the chunk forwards offloaded in the run's last step, the bytes they chose from, those copied to the host
/// and those left on the device (the resident saved bytes), from summary.json's OffloadPerRank (harness run's totals of
/// the executor's bookkeeping, offload.csv's rows summed), against <see cref="RankOffload.Of"/> for the same model and
/// description as run. Bytes do not depend on the device, so CPU runs and ranks on one device compare too; the GPU preset
/// only completes the description the simulator costs. At alpha 0 nothing offloads: neither side records anything.
/// </summary>
public sealed record OffloadValidation(string Run, string Model, RunDescription Config, int Rank, int PipelineRank, RankOffload Measured, RankOffload Simulated)
{
    /// <summary>Whether the run's bookkeeping is the simulator's, to the byte.</summary>
    public bool Equal => Measured == Simulated;

    /// <summary>Every rank of the run in <paramref name="folder"/>, in rank order; <paramref name="gpu"/> replaces the preset
    /// the run named (the bytes are the same on every one).</summary>
    public static IReadOnlyList<OffloadValidation> Of(string folder, GpuSpec? gpu = null) =>
        SummaryRun.Compare(folder, "count this run's offload", (root, ran) =>
    {
        var d = ran.Description;
        if (d.CpuOffloadingLayers > 0)
            throw new RunValidationException($"{folder} ran Megatron-core's --cpu-offloading-num-layers; --offload compares Megatron-Kwai's --offload-ratio (the layers' bookkeeping is in its offload.csv).");
        // Kwai's pack hook records every dropout mask autograd keeps; on a GPU libtorch's dropout kernel keeps its masks (the
        // embedding's, and a layer's wherever the executor's add-norm does not drop inside) within the operator, where the
        // executor's record cannot reach them.
        if (ran.Device == ExecutionDevice.Cuda && ran.Model.HiddenDropout > 0 && d.OffloadRatio > 0)
            throw new RunValidationException($"{folder} ran on a GPU with hidden dropout {ran.Model.HiddenDropout}: libtorch's dropout kernel keeps its masks (the embedding's among them) inside itself, where the offload cannot record them as Megatron-Kwai's pack hook does; --offload compares such runs on CPU ranks, or GPU runs with --hidden-dropout 0.");
        int world = d.WorldSize;
        var measured = Recorded(root, d, world, folder);
        var preset = gpu ?? (ran.Gpu is string name && GpuPresets.All.TryGetValue(name, out var named) ? named : GpuPresets.All[GpuPresets.DefaultName]);
        var cluster = new ClusterSpec(preset, world, Math.Min(world, preset.GpusPerNode));
        var reasons = Estimator.Validate(ran.Model, cluster, d);
        if (reasons.Count > 0) throw new InvalidConfigException(reasons);
        var costs = PipelineCosts.Build(ran.Model, cluster, d);
        var order = RankOrder.Of(d);
        string run = Path.GetFileName(Path.TrimEndingDirectorySeparator(folder));
        return Enumerable.Range(0, world).Select(r =>
        {
            int stage = order.Coordinates(r).Pp;
            return new OffloadValidation(run, ran.Model.Name, d, r, stage, measured[r], RankOffload.Of(costs, stage));
        }).ToList();
    });

    /// <summary>Each rank's totals as the run recorded them; none at all where it offloaded nothing (alpha 0).</summary>
    private static IReadOnlyList<RankOffload> Recorded(JsonElement root, RunDescription d, int world, string folder)
    {
        if (d.OffloadRatio <= 0) return Enumerable.Repeat(default(RankOffload), world).ToList();
        if (!root.TryGetProperty("OffloadPerRank", out var perRank) || perRank.ValueKind != JsonValueKind.Array)
            throw new RunValidationException($"{folder} ran --offload-ratio {d.OffloadRatio} but its summary.json holds no OffloadPerRank (written by harness run since it records the offload's bookkeeping).");
        var totals = perRank.EnumerateArray().Select(t => new RankOffload(t.GetProperty("Records").GetInt32(),
            t.GetProperty("SavedBytes").GetInt64(), t.GetProperty("OffloadedBytes").GetInt64())).ToList();
        return totals.Count == world ? totals
            : throw new RunValidationException($"{folder}: summary.json's OffloadPerRank holds {totals.Count} ranks, not the run's {world}.");
    }
}
