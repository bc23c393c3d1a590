using System.Text.Json;
using System.Text.Json.Serialization;

namespace Harness.Simulator.Specs;

/// <summary>A spec file that cannot be read, with one sentence saying what is wrong and where.</summary>
public sealed class SpecFileException(string message) : Exception(message);

/// <summary>
/// JSON files for the vocabulary: a user's model (<c>--model my.json</c>) or cluster (<c>--cluster my.json</c>).
/// Property names are Megatron's argument names in snake case (<c>num_layers</c>, <c>hidden_size</c>, ...),
/// enum values likewise (<c>swi_glu</c>, <c>rms_norm</c>, <c>rotary</c>). Every constructor parameter is
/// required and unknown properties are errors, so a typo cannot silently become a default.
/// </summary>
public static class SpecJson
{
    public static JsonSerializerOptions Options { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        PropertyNameCaseInsensitive = true,
        WriteIndented = true,
        RespectRequiredConstructorParameters = true,
        RespectNullableAnnotations = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false) },
    };

    public static string Write(ModelSpec model) => JsonSerializer.Serialize(model, Options);
    public static string Write(ClusterSpec cluster) => JsonSerializer.Serialize(cluster, Options);
    public static string Write(GpuSpec gpu) => JsonSerializer.Serialize(gpu, Options);

    /// <summary>Reads and validates a model; throws <see cref="SpecFileException"/> naming the problem.</summary>
    public static ModelSpec ParseModel(string json, string source)
    {
        var model = Deserialize<ModelSpec>(json, source);
        var errors = model.Validate();
        if (errors.Count > 0) throw new SpecFileException($"{source}: {string.Join(" ", errors)}");
        return model;
    }

    /// <summary>Reads a cluster (with its GPU); throws <see cref="SpecFileException"/> naming the problem.</summary>
    public static ClusterSpec ParseCluster(string json, string source)
    {
        var cluster = Deserialize<ClusterSpec>(json, source);
        var g = cluster.Gpu;
        var errors = new List<string>();
        void Positive(string name, double value)
        {
            if (!(value > 0)) errors.Add($"{name} is {value}; it must be positive.");
        }
        Positive("world_size", cluster.WorldSize);
        Positive("gpus_per_node", cluster.GpusPerNode);
        Positive("gpu.peak_bf16_flops", g.PeakBf16Flops);
        Positive("gpu.peak_fp16_flops", g.PeakFp16Flops);
        Positive("gpu.memory_bytes", g.MemoryBytes);
        Positive("gpu.hbm_bandwidth_bytes_per_second", g.HbmBandwidthBytesPerSecond);
        Positive("gpu.intra_node.bandwidth_bytes_per_second", g.IntraNode.BandwidthBytesPerSecond);
        Positive("gpu.inter_node.bandwidth_bytes_per_second", g.InterNode.BandwidthBytesPerSecond);
        Positive("gpu.host_link_bytes_per_second", g.HostLinkBytesPerSecond);
        foreach (var (name, value) in new[] { ("gemm", g.Efficiency.Gemm), ("attention", g.Efficiency.Attention), ("hbm", g.Efficiency.Hbm) })
            if (!(value > 0 && value <= 1)) errors.Add($"gpu.efficiency.{name} is {value}; it must be in (0, 1].");
        if (g.Efficiency.FusedAttention is double fused && !(fused > 0 && fused <= 1))
            errors.Add($"gpu.efficiency.fused_attention is {fused}; it must be in (0, 1], or null where the GPU has no cuDNN fused attention.");
        if (g.Efficiency.DropoutDrawsPerSecond is double draws && !(draws > 0))
            errors.Add($"gpu.efficiency.dropout_draws_per_second is {draws}; it must be positive, or null where it was not measured.");
        if (!(g.Efficiency.AttentionHalfKeys >= 0))
            errors.Add($"gpu.efficiency.attention_half_keys is {g.Efficiency.AttentionHalfKeys}; it must be 0 (no dependence on length) or positive.");
        if (errors.Count > 0) throw new SpecFileException($"{source}: {string.Join(" ", errors)}");
        return cluster;
    }

    public static ModelSpec ReadModel(string path) => ParseModel(ReadFile(path), path);
    public static ClusterSpec ReadCluster(string path) => ParseCluster(ReadFile(path), path);

    private static string ReadFile(string path)
    {
        if (Directory.Exists(path)) throw new SpecFileException($"{path} is a folder; give a JSON file.");
        if (!File.Exists(path)) throw new SpecFileException($"{path} does not exist; give a JSON file.");
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SpecFileException($"cannot read {path}: {e.Message}");
        }
    }

    private static T Deserialize<T>(string json, string source) where T : class
    {
        try
        {
            return JsonSerializer.Deserialize<T>(json, Options)
                   ?? throw new SpecFileException($"{source}: the file holds null, not an object.");
        }
        catch (JsonException e)
        {
            throw new SpecFileException($"{source}{JsonFileProblem.Describe(e, typeof(T))}");
        }
    }
}
