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
/// <summary>Who reads a command line (<see cref="CommandLine.Parse"/>).</summary>
public enum FlagReader { Estimate, Run, Tool }

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
    public static CommandLine? ParseOrHelp(string[] args, IReadOnlyList<Flag> known, string usage)
    {
        var cl = Parse(args, known, FlagReader.Tool);
        if (!cl.Switch("--help")) return cl;
        Console.WriteLine(usage);
        Flag.PrintHelp(known, 24);
        return null;
    }

    /// <param name="reader">Who reads the line: an estimate takes Megatron's settings and its flags that change only a run's
    /// numbers, and lists them; a run takes the settings that do not shape its training and refuses the rest until it applies
    /// them; a tool of Harness's own takes none of Megatron's flags.</param>
    public static CommandLine Parse(string[] args, IEnumerable<Flag> known, FlagReader reader = FlagReader.Tool)
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
                var megatron = reader == FlagReader.Tool ? null : MegatronVocabulary.Find(name);
                // Its values go with it: Megatron's arity where known (a list runs on to the next flag), else the next token
                // unless it is another flag.
                bool takesValue = megatron?.TakesValue ?? (i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal));
                if (inline is null && takesValue && i + 1 < args.Length) arg = $"{arg} {args[++i]}";
                while (megatron is { TakesList: true } && i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal))
                    arg = $"{arg} {args[++i]}";
                string computes = reader == FlagReader.Estimate ? "the estimate" : "the run";
                if (megatron is null)
                {
                    var closest = Spelling.Closest(name, byName.Keys) ?? (reader == FlagReader.Tool ? null : Spelling.Closest(name, MegatronVocabulary.All.Keys));
                    cl.Errors.Add(closest is null ? $"unknown option {name}; the command's --help lists its options."
                        : $"unknown option {name}; did you mean {closest}?");
                }
                else if (reader == FlagReader.Estimate ? megatron.IsSetting || megatron.NumbersOnly : megatron is { IsSetting: true, ShapesTraining: false })
                    cl.ignored.Add(arg);
                else if (reader == FlagReader.Run && (megatron.ShapesTraining || megatron.NumbersOnly))
                    cl.Errors.Add($"{name} changes what harness run trains, and harness run does not apply it yet; remove it.");
                else
                    cl.Errors.Add($"{name} is a Megatron-LM flag that changes {computes}, which Harness does not model; remove it.");
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
            while (flag.TakesList && i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal))
                inline = $"{inline} {args[++i]}";
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
