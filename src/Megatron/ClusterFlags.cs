using Harness.Simulator.Specs;

namespace Harness.Megatron;

/// <summary>The cluster: <c>--cluster FILE</c>, or <c>--gpu PRESET</c> with <c>--gpus N</c> and
/// <c>--gpus-per-node N</c> (both default to one node of the preset; either overrides the file).</summary>
public static class ClusterFlags
{
    public static readonly Flag[] Flags =
    {
        new("--gpu", true, $"GPU preset ({string.Join(", ", GpuPresets.All.Keys)}; default {GpuPresets.DefaultName})"),
        new("--cluster", true, "cluster JSON file (GPU, world size, GPUs per node)"),
        new("--gpus", true, "world size: number of GPUs (default: one node)"),
        new("--gpus-per-node", true, "GPUs per node (default: the preset's)"),
    };

    public static ClusterSpec? Read(CommandLine cl)
    {
        int? gpus = cl.Int("--gpus"), perNode = cl.Int("--gpus-per-node");
        string? file = cl.String("--cluster"), gpuName = cl.String("--gpu");
        ClusterSpec? cluster = null;
        if (file is not null)
        {
            if (gpuName is not null) cl.Errors.Add("--gpu and --cluster both name the GPU; pass one of them.");
            try { cluster = SpecJson.ReadCluster(file); }
            catch (SpecFileException e) { cl.Errors.Add(e.Message); return null; }
        }
        else
        {
            gpuName ??= GpuPresets.DefaultName;
            if (!GpuPresets.All.TryGetValue(gpuName, out var gpu))
            {
                cl.Errors.Add($"--gpu '{gpuName}' is not a preset; valid: {string.Join(", ", GpuPresets.All.Keys)} (or --cluster FILE).");
                return null;
            }
            cluster = ClusterSpec.Of(gpu, gpu.GpusPerNode);
        }
        if (perNode is int n) cluster = cluster with { GpusPerNode = n, WorldSize = gpus ?? (file is null ? n : cluster.WorldSize) };
        if (gpus is int w) cluster = cluster with { WorldSize = w };
        // A world size that only echoes --gpus-per-node's mistake is not reported again.
        if (cluster.WorldSize < 1 && (gpus is not null || cluster.GpusPerNode >= 1)) cl.Errors.Add($"--gpus is {cluster.WorldSize}; it must be at least 1.");
        if (cluster.GpusPerNode < 1) cl.Errors.Add($"--gpus-per-node is {cluster.GpusPerNode}; it must be at least 1.");
        // No cluster to validate a layout against: what would follow are echoes of this one mistake.
        return cluster.WorldSize < 1 || cluster.GpusPerNode < 1 ? null : cluster;
    }
}
