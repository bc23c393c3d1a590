using System.Text.RegularExpressions;
using Harness.Cli.Commands;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>
/// The README cannot drift from what the commands do: its table of defaults is checked against the codec, and its worked
/// example's output against what `harness simulate` prints for the same command.
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

    /// <summary>The worked example under Simulate: its command, run, prints every line the README shows.</summary>
    [Fact]
    public void TheWorkedExampleIsWhatSimulatePrints()
    {
        var lines = Readme.Split('\n');
        int start = Array.FindIndex(lines, l => l.Trim().StartsWith("dotnet run --project src/Cli -c Release -- simulate --model llama-175b", StringComparison.Ordinal));
        Assert.True(start > 0, "the worked example is missing");
        var command = new List<string>();
        int i = start;
        for (; lines[i].TrimEnd().EndsWith('\\'); i++) command.Add(lines[i].Trim().TrimEnd('\\'));
        command.Add(lines[i].Trim());
        var args = string.Join(' ', command).Split(' ', StringSplitOptions.RemoveEmptyEntries).SkipWhile(a => a != "simulate").Skip(1).ToArray();
        var shown = lines.Skip(i + 1).SkipWhile(string.IsNullOrWhiteSpace).TakeWhile(l => l.Trim() != "...")
            .Where(l => l.Trim().Length > 0).Select(l => Regex.Replace(l.Trim(), @"\s+", " ")).ToList();
        Assert.True(shown.Count >= 5, "the worked example shows no output");
        var (code, output, _) = ConsoleCapture.Run(SimulateCommand.Run, args);
        Assert.Equal(0, code);
        var printed = output.Split('\n').Select(l => Regex.Replace(l.Trim(), @"\s+", " ")).ToHashSet();
        foreach (var line in shown) Assert.Contains(line, printed);
    }
}
