using System.Globalization;

namespace Harness.Megatron;

/// <summary>
/// Megatron-style arguments (<c>--name value</c>, <c>--name=value</c>, <c>--switch</c>) parsed against the flags a command
/// knows. A flag the command does not take is looked up in Megatron-LM's own (<see cref="MegatronVocabulary"/>), so a whole
/// launch line can be pasted: Megatron's settings (logging, checkpoints, data, the learning-rate schedule) are kept as
/// <see cref="Ignored"/> with their values, to be listed; Megatron's flags that change what the command computes and flags
/// nobody defines become errors, a misspelling with the closest valid spelling. Readers collect every problem in
/// <see cref="Errors"/> instead of stopping at the first.
/// </summary>
public sealed class CommandLine
{
    private readonly Dictionary<string, string?> values = new(StringComparer.Ordinal);
    private readonly List<string> ignored = new();

    public List<string> Errors { get; } = new();

    /// <summary>Megatron-LM's settings the command does not use, as written (with their value), in order.</summary>
    public IReadOnlyList<string> Ignored => ignored;

    /// <summary>True when any of the given flags appeared.</summary>
    public bool HasAny(IEnumerable<Flag> flags) => flags.Any(f => values.ContainsKey(f.Name));

    /// <summary>Parses <paramref name="args"/>; with --help prints <paramref name="usage"/> and the flags instead and
    /// returns null (the command then exits 0).</summary>
    public static CommandLine? ParseOrHelp(string[] args, IReadOnlyList<Flag> known, string usage, string computes)
    {
        var cl = Parse(args, known, computes);
        if (!cl.Switch("--help")) return cl;
        Console.WriteLine(usage);
        Flag.PrintHelp(known, 24);
        return null;
    }

    /// <param name="computes">What the command computes, for the sentence refusing a Megatron flag that would change it
    /// ("the estimate", "the run").</param>
    /// <param name="estimates">The command estimates cost: Megatron's flags that change only a run's numbers (an epsilon, the
    /// rotary base) are accepted and listed, not refused.</param>
    public static CommandLine Parse(string[] args, IEnumerable<Flag> known, string computes = "what this command computes", bool estimates = false)
    {
        var byName = known.ToDictionary(f => f.Name, StringComparer.Ordinal);
        var cl = new CommandLine();
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
            {
                cl.Errors.Add($"unexpected argument '{arg}': options are written --name value.");
                continue;
            }
            string name = arg;
            string? inline = null;
            int eq = arg.IndexOf('=');
            if (eq > 0) { name = arg[..eq]; inline = arg[(eq + 1)..]; }
            if (!byName.TryGetValue(name, out var flag))
            {
                var megatron = MegatronVocabulary.Find(name);
                // Its value goes with it: Megatron's arity where known, else the next token unless it is another flag.
                bool takesValue = megatron?.TakesValue ?? (i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal));
                if (inline is null && takesValue && i + 1 < args.Length) arg = $"{arg} {args[++i]}";
                if (megatron is { IsSetting: true } || (estimates && megatron is { NumbersOnly: true })) cl.ignored.Add(arg);
                else if (megatron is not null)
                    cl.Errors.Add($"{name} is a Megatron-LM flag that changes {computes}, which Harness does not model; remove it.");
                else
                {
                    var closest = Spelling.Closest(name, byName.Keys) ?? Spelling.Closest(name, MegatronVocabulary.All.Keys);
                    cl.Errors.Add(closest is null ? $"unknown option {name}; the command's --help lists its options."
                        : $"unknown option {name}; did you mean {closest}?");
                }
                continue;
            }
            if (!flag.TakesValue)
            {
                if (inline is not null) cl.Errors.Add($"{name} is a switch and takes no value (got '{inline}').");
                cl.values[name] = null;
                continue;
            }
            if (inline is null)
            {
                if (i + 1 >= args.Length) { cl.Errors.Add($"{name} needs a value."); continue; }
                inline = args[++i];
            }
            cl.values[name] = inline;
        }
        return cl;
    }

    public bool Switch(string name) => values.ContainsKey(name);

    public string? String(string name) => values.TryGetValue(name, out var v) ? v : null;

    public int? Int(string name)
    {
        var s = String(name);
        if (s is null) return null;
        if (int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)) return v;
        Errors.Add(long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out _) || System.Numerics.BigInteger.TryParse(s, out _)
            ? $"{name} {s} is out of range; it takes an integer up to {int.MaxValue}."
            : $"{name} expects an integer, not '{s}'.");
        return null;
    }

    public double? Double(string name)
    {
        var s = String(name);
        if (s is null) return null;
        if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)) return v;
        Errors.Add($"{name} expects a number, not '{s}'.");
        return null;
    }

    /// <summary>One of <paramref name="choices"/> (case-insensitive), or null when absent or invalid (with an error).</summary>
    public string? Choice(string name, params string[] choices)
    {
        var s = String(name);
        if (s is null) return null;
        foreach (var c in choices)
            if (string.Equals(c, s, StringComparison.OrdinalIgnoreCase)) return c;
        Errors.Add($"{name} '{s}' is not one of: {string.Join(", ", choices)}.");
        return null;
    }
}
