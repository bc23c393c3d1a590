using System.Globalization;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training;

/// <summary>
/// PyTorch's PYTORCH_CUDA_ALLOC_CONF, which libtorch's CUDA caching allocator reads when it starts: the description's
/// --expandable-segments and --max-split-size-mb as that variable, and the variable read back into them.
/// </summary>
public static class AllocatorConf
{
    public const string Variable = "PYTORCH_CUDA_ALLOC_CONF";

    /// <summary>The variable's value for <paramref name="d"/>'s allocator settings; null when it sets none.</summary>
    public static string? For(RunDescription d)
    {
        var options = new List<string>();
        if (d.ExpandableSegments) options.Add("expandable_segments:True");
        if (d.MaxSplitSizeMb is int mb) options.Add($"max_split_size_mb:{mb.ToString(CultureInfo.InvariantCulture)}");
        return options.Count == 0 ? null : string.Join(',', options);
    }

    /// <summary><paramref name="d"/> with the allocator settings <paramref name="value"/> (the variable, or null when unset)
    /// gives; options the simulator does not model (garbage_collection_threshold, ...) are left out.</summary>
    public static RunDescription Apply(RunDescription d, string? value)
    {
        bool expandable = false;
        int? split = null;
        foreach (var option in (value ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var kv = option.Split(':', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2) continue;
            if (kv[0] == "expandable_segments") expandable = kv[1].Equals("True", StringComparison.OrdinalIgnoreCase);
            else if (kv[0] == "max_split_size_mb" && int.TryParse(kv[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int mb)) split = mb;
        }
        return d with { ExpandableSegments = expandable, MaxSplitSizeMb = split };
    }
}
