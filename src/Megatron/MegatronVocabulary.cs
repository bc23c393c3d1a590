using System.Reflection;

namespace Harness.Megatron;

/// <summary>How a Megatron-LM flag is written and what it sets.</summary>
/// <param name="TakesValue">Whether a value follows the flag (one, or a list of them).</param>
/// <param name="TakesList">Whether the values run on to the next flag (argparse's nargs '+' or '*').</param>
/// <param name="SettingKind">For a flag that changes neither the cost nor the arithmetic of a training step (logging,
/// checkpointing, data, the learning-rate schedule, ...), its kind; null for one that changes either.</param>
/// <param name="NumbersOnly">A flag that changes a run's numbers (an epsilon, the rotary base) but not its cost.</param>
public sealed record MegatronFlag(string Name, bool TakesValue, bool TakesList, string? SettingKind, bool NumbersOnly)
{
    public bool IsSetting => SettingKind is not null;

    /// <summary>A setting that changes what a run trains (its schedule, initialization, length or exit) without changing the
    /// cost of a step: an estimate takes it, a run must apply it.</summary>
    public bool ShapesTraining => SettingKind is "schedule" or "optimizer-hparam" or "init" or "run-length" or "exit" or "eval";
}

/// <summary>
/// Every flag Megatron-LM's argument parser registers (megatron/training/arguments.py with the flags it generates from its
/// configuration dataclasses; NVIDIA/Megatron-LM at d98e8a6, August 2026), so that a pasted launch line is read flag by
/// flag: a flag of Megatron's that a command does not take is either a setting (accepted and listed) or one that changes
/// what the command computes (refused), and a misspelling is told from both.
/// </summary>
public static class MegatronVocabulary
{
    private static readonly Lazy<IReadOnlyDictionary<string, MegatronFlag>> Table = new(Load);

    public static IReadOnlyDictionary<string, MegatronFlag> All => Table.Value;

    public static MegatronFlag? Find(string name) => All.TryGetValue(name, out var f) ? f : null;

    private static IReadOnlyDictionary<string, MegatronFlag> Load()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("megatron-flags.tsv")
            ?? throw new InvalidOperationException("megatron-flags.tsv is not embedded in Harness.Megatron.");
        using var reader = new StreamReader(stream);
        var flags = new Dictionary<string, MegatronFlag>(StringComparer.Ordinal);
        while (reader.ReadLine() is string line)
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var f = line.Split('\t');
            flags[f[0]] = new MegatronFlag(f[0], f[1] != "switch", f[1] == "list",
                f[2].StartsWith("setting:", StringComparison.Ordinal) ? f[2]["setting:".Length..] : null, f[2] == "numerics");
        }
        return flags;
    }
}
