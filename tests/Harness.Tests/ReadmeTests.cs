using System.Text.RegularExpressions;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>
/// The README cannot drift from what the commands do: its table of defaults is checked against the codec, every example
/// that shows a command's output against what the command prints now, and the numbers its sentences quote from them.
/// </summary>
[Collection("Console")]
public partial class ReadmeTests
{
    private static readonly string Readme = File.ReadAllText(Path.Combine(ExperimentFileTests.ExperimentsDir, "..", "README.md"));

    [GeneratedRegex(@"`(--[a-z0-9-]+)`")]
    private static partial Regex FlagPattern();

    [GeneratedRegex(@"`([^`]+)`")]
    private static partial Regex ValuePattern();

    /// <summary>A model given by flags alone (Megatron's defaults apply to it), so model flags have their defaults.</summary>
    private static readonly string[] CustomModel = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "128"];

    /// <summary>Everything the codec reads from a line: model, run description (on 64 ranks) and settings; null when the
    /// line alone is not valid.</summary>
    private static (ModelSpec?, RunDescription, RunSettings)? TryRead(IEnumerable<string> flags)
    {
        var known = ModelFlags.Flags.Concat(RunDescriptionFlags.Flags).Concat(RunSettingsFlags.Flags).DistinctBy(f => f.Name);
        var cl = CommandLine.Parse([.. CustomModel, .. flags], known);
        var result = (ModelFlags.Read(cl), RunDescriptionFlags.Read(cl, 64), RunSettingsFlags.Read(cl));
        return cl.Errors.Count == 0 ? result : null;
    }

    private static (ModelSpec?, RunDescription, RunSettings) Read(IEnumerable<string> flags) =>
        TryRead(flags) ?? throw new ArgumentException($"'{string.Join(' ', flags)}' is not valid on its own");

    /// <summary>Flags that apply only beside another (the recompute method and num-layers, with full recomputation).</summary>
    private static readonly string[] FullRecompute = ["--recompute-granularity", "full"];

    [Fact]
    public void TheDefaultsTableIsTheCodecs()
    {
        var table = Readme[Readme.IndexOf("| flag | default | note |", StringComparison.Ordinal)..];
        var rows = table.Split('\n').Skip(2).TakeWhile(l => l.StartsWith('|')).ToList();
        Assert.True(rows.Count > 30, "the defaults table is missing");
        var none = Read([]);
        int checkedRows = 0;
        foreach (var row in rows)
        {
            var cells = row.Split('|');
            var flags = FlagPattern().Matches(cells[1]).Select(m => m.Groups[1].Value).ToList();
            string cell = cells[2].Trim();
            if (cell is "off")
            {
                // A switch that is off by default changes the description (or, for fp16-only switches, the fp16 one).
                foreach (var f in flags)
                    Assert.True(!Read([f]).Equals(none) || !Read([f, "--fp16"]).Equals(Read(["--fp16"])), $"{f} changes nothing");
                checkedRows++;
                continue;
            }
            var values = ValuePattern().Matches(cell).Select(m => m.Groups[1].Value).Where(v => !v.StartsWith("--", StringComparison.Ordinal)).ToList();
            if (cell is "on") values = [""];
            if (values.Count == 0) continue; // a default that is a rule ("micro-batch x data-parallel size"), not a value
            for (int i = 0; i < flags.Count; i++)
            {
                string value = values[Math.Min(i, values.Count - 1)];
                string[] given = value.Length == 0 ? [flags[i]] : [flags[i], value];
                bool isDefault = TryRead(given) is { } alone ? alone.Equals(none) : Read([.. FullRecompute, .. given]).Equals(Read(FullRecompute));
                Assert.True(isDefault, $"{flags[i]} {value} is not the default");
            }
            checkedRows++;
        }
        Assert.True(checkedRows > 25, $"only {checkedRows} rows were checked");
    }

    private const string Invocation = "dotnet run --project src/Cli -c Release --";

    /// <summary>Every example in the README that shows a command's output: an indented command block followed by an indented
    /// block that is not commands, cut where it shows "...". Each command is run and must print every line shown.</summary>
    private static IEnumerable<(string[] Args, List<string> Shown)> Examples()
    {
        var lines = Readme.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].StartsWith("    " + Invocation, StringComparison.Ordinal) || lines[i - 1].StartsWith("    ", StringComparison.Ordinal)) continue;
            var command = new List<string>();
            int j = i;
            for (; lines[j].TrimEnd().EndsWith('\\'); j++) command.Add(lines[j].Trim().TrimEnd('\\'));
            command.Add(lines[j].Trim());
            // A block of several commands (one a line) shows no output.
            if (lines[j + 1].StartsWith("    ", StringComparison.Ordinal) || lines[j + 1].Trim().Length > 0) continue;
            var shown = lines.Skip(j + 2).TakeWhile(l => l.StartsWith("    ", StringComparison.Ordinal) || l.Trim().Length == 0)
                .TakeWhile(l => l.Trim() != "...").Where(l => l.Trim().Length > 0).Select(Squeeze).ToList();
            if (shown.Count == 0 || shown[0].StartsWith(Invocation, StringComparison.Ordinal)) continue;
            var args = string.Join(' ', command)[Invocation.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            yield return (args, shown);
        }
    }

    private static string Squeeze(string line) => Regex.Replace(line.Trim(), @"\s+", " ");

    private static HashSet<string> Printed(string[] args)
    {
        var (code, output, _) = ConsoleCapture.Run(Harness.Cli.CommandTable.Dispatch, args);
        Assert.Equal(0, code);
        return output.Split('\n').Select(Squeeze).ToHashSet();
    }

    [Fact]
    public void EveryExampleOutputIsWhatTheCommandPrints()
    {
        var examples = Examples().ToList();
        Assert.Contains(examples, e => e.Args[0] == "simulate" && e.Args.Contains("llama-175b")); // the worked example
        foreach (var (args, shown) in examples)
        {
            Assert.True(shown.Count >= 3, $"'{string.Join(' ', args)}' shows almost no output");
            var printed = Printed(args);
            foreach (var line in shown) Assert.True(printed.Contains(line), $"'{string.Join(' ', args)}' no longer prints: {line}");
        }
    }

    /// <summary>The worked example's sentence about Megatron-LM's defaults: the same command without its last five flags
    /// (each with its values) prints the step time and tokens/s the sentence gives.</summary>
    [Fact]
    public void TheWorkedExamplesDefaultsSentenceIsWhatSimulatePrints()
    {
        var (args, _) = Examples().Single(e => e.Args[0] == "simulate" && e.Args.Contains("llama-175b"));
        var m = Regex.Match(Readme, @"The same command without its last five flags[^:]*: ([0-9.]+) s, ([0-9]+) tokens/s per GPU\.");
        Assert.True(m.Success, "the sentence is missing");
        var kept = args.ToList();
        for (int flags = 0; flags < 5; flags++)
            kept.RemoveRange(kept.FindLastIndex(a => a.StartsWith("--", StringComparison.Ordinal)), kept.Count - kept.FindLastIndex(a => a.StartsWith("--", StringComparison.Ordinal)));
        var printed = Printed([.. kept]);
        Assert.Contains($"step time {m.Groups[1].Value} s", printed);
        Assert.Contains($"tokens/s per GPU {m.Groups[2].Value}", printed);
    }
}
