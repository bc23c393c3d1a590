using System.Globalization;
using System.Text.Json;
using Harness.Cli.Output;
using Harness.Executor.Training.Records;
using Harness.Megatron;
using Spectre.Console;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness compare RUN...`: several `harness run` folders side by side — the last training loss, the validation loss at the
/// last iteration every run evaluated and its difference to the first run's (the question a study of one setting against a
/// baseline asks, e.g. CAAT-Net's factor p against p = 1; runs cut short by time at different iterations are compared
/// where all of them were), tokens seen, the median step — and their loss curves in one plot.
/// </summary>
public static class CompareCommand
{
    private static readonly Flag[] Flags =
    {
        new("--plot", true, "write the runs' loss curves in one PNG here"),
        new("--csv", true, "also write the table to this CSV file"),
        new("--title", true, "the plot's title (default: the runs' names)"),
        new("--help", false, "this help"),
    };

    /// <summary>One run's row: its final training loss, its validation loss at <paramref name="ValidationIteration"/> (the last
    /// iteration every run that validates has a validation loss for, else its own last), and what it trained on.</summary>
    public sealed record Row(string Run, long Iterations, long Tokens, double FinalLoss, double? ValidationLoss, long? ValidationIteration, double? ValidationDelta,
        double MedianStepMs, double SyncFactor, string Layout);

    public static int Run(string[] args)
    {
        var paths = args.TakeWhile(a => !a.StartsWith("--", StringComparison.Ordinal)).ToList();
        var cl = CommandLine.Parse(args[paths.Count..], Flags);
        if (cl.Switch("--help"))
        {
            Console.WriteLine("usage: harness compare RUN_FOLDER... [options]   (the first run is the reference of the differences)");
            Flag.PrintHelp(Flags, 24);
            return 0;
        }
        if (cl.Ignored.Count > 0) cl.Errors.Add($"options it does not take: {string.Join(' ', cl.Ignored)}; see harness compare --help.");
        if (paths.Count == 0) cl.Errors.Add("name at least one run folder (harness run --out DIR).");
        foreach (var p in paths.Where(p => !File.Exists(Path.Combine(p, "metrics.csv"))))
            cl.Errors.Add($"'{p}' holds no metrics.csv (a harness run --out folder has one).");
        foreach (var (flag, file) in new[] { ("--plot", cl.String("--plot")), ("--csv", cl.String("--csv")) })
            if (file is not null && OutputFolder.Writable(file, flag) is string error) cl.Errors.Add(error);
        if (cl.Errors.Count > 0)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness compare: {e}");
            return 2;
        }
        List<(string Name, IReadOnlyList<IterationRecord> Records, JsonElement? Summary)> runs;
        try
        {
            runs = paths.Select(p => (Path.GetFileName(Path.TrimEndingDirectorySeparator(p)), MetricsCsv.Read(Path.Combine(p, "metrics.csv")), Summary(p))).ToList();
        }
        catch (Exception e) when (e is InvalidDataException or JsonException)
        {
            Console.Error.WriteLine($"harness compare: {e.Message.Split('\n')[0]}");
            return 2;
        }
        var rows = Rows(runs);
        Render(rows);
        if (cl.String("--csv") is string csv) WriteCsv(rows, csv);
        if (cl.String("--plot") is string plot)
        {
            Plots.Compare(plot, runs.Select(r => (r.Name, r.Records)).ToList(), cl.String("--title") ?? string.Join(" vs ", runs.Select(r => r.Name)));
            Terminal.Out.MarkupLine($"wrote {Markup.Escape(plot)}");
        }
        return 0;
    }

    private static JsonElement? Summary(string folder)
    {
        string path = Path.Combine(folder, "summary.json");
        return File.Exists(path) ? JsonDocument.Parse(File.ReadAllText(path)).RootElement : null;
    }

    /// <summary>The table: the first run is the reference of the validation differences.</summary>
    public static IReadOnlyList<Row> Rows(IReadOnlyList<(string Name, IReadOnlyList<IterationRecord> Records, JsonElement? Summary)> runs)
    {
        long? common = CommonValidationIteration(runs.Select(r => r.Records));
        double? reference = null;
        var rows = new List<Row>();
        foreach (var (name, records, summary) in runs)
        {
            var d = summary?.GetProperty("Description");
            long globalBatch = d?.GetProperty("GlobalBatch").GetInt64() ?? 0;
            long seq = summary?.GetProperty("Model").GetProperty("SeqLength").GetInt64() ?? 0;
            var validated = records.LastOrDefault(r => r.ValidationLoss is not null && (common is null || r.Iteration == common));
            if (rows.Count == 0) reference = validated?.ValidationLoss;
            var stepMs = records.Select(r => r.ElapsedMs).Order().ToList();
            rows.Add(new Row(name, records.Count == 0 ? 0 : records[^1].Iteration, (records.Count == 0 ? 0 : records[^1].Iteration) * globalBatch * seq,
                records.Count == 0 ? double.NaN : records[^1].Loss, validated?.ValidationLoss, validated?.Iteration, validated?.ValidationLoss - reference,
                stepMs.Count == 0 ? double.NaN : stepMs[stepMs.Count / 2], d is JsonElement e && e.TryGetProperty("SyncFactor", out var p) ? p.GetDouble() : 1,
                d is JsonElement l ? $"d{l.GetProperty("DataParallel").GetInt32()} t{l.GetProperty("TensorParallel").GetInt32()} p{l.GetProperty("PipelineParallel").GetInt32()} c{l.GetProperty("ContextParallel").GetInt32()}" : "?"));
        }
        return rows;
    }

    /// <summary>The last iteration at which every run that has validation losses has one; null where they share none (each
    /// run is then read at its own last).</summary>
    public static long? CommonValidationIteration(IEnumerable<IReadOnlyList<IterationRecord>> runs)
    {
        var sets = runs.Select(r => r.Where(x => x.ValidationLoss is not null).Select(x => x.Iteration).ToHashSet()).Where(s => s.Count > 0).ToList();
        if (sets.Count == 0) return null;
        var shared = sets.Skip(1).Aggregate(new HashSet<long>(sets[0]), (acc, s) => { acc.IntersectWith(s); return acc; });
        return shared.Count == 0 ? null : shared.Max();
    }

    private static void Render(IReadOnlyList<Row> rows)
    {
        var c = CultureInfo.InvariantCulture;
        if (Console.IsOutputRedirected) Terminal.Out.Profile.Width = Math.Max(Terminal.Out.Profile.Width, 160);
        var table = new Table().AddColumn("run").AddColumn("layout").AddColumn(new TableColumn("p").RightAligned())
            .AddColumn(new TableColumn("iterations").RightAligned()).AddColumn(new TableColumn("tokens").RightAligned())
            .AddColumn(new TableColumn("final loss").RightAligned()).AddColumn(new TableColumn("validation loss").RightAligned())
            .AddColumn(new TableColumn("at iteration").RightAligned())
            .AddColumn(new TableColumn($"vs {Markup.Escape(rows[0].Run)}").RightAligned()).AddColumn(new TableColumn("median step ms").RightAligned());
        foreach (var r in rows)
            table.AddRow(Markup.Escape(r.Run), r.Layout, r.SyncFactor.ToString("0.###", c), r.Iterations.ToString(c), r.Tokens.ToString("N0", c),
                r.FinalLoss.ToString("F4", c), r.ValidationLoss?.ToString("F4", c) ?? "-", r.ValidationIteration?.ToString(c) ?? "-", r.ValidationDelta?.ToString("+0.0000;-0.0000", c) ?? "-",
                r.MedianStepMs.ToString("F1", c));
        Terminal.Out.Write(table);
    }

    private static void WriteCsv(IReadOnlyList<Row> rows, string path)
    {
        var c = CultureInfo.InvariantCulture;
        File.WriteAllLines(path, rows.Select(r => string.Join(',', r.Run, $"\"{r.Layout}\"", r.SyncFactor.ToString("R", c), r.Iterations.ToString(c),
                r.Tokens.ToString(c), r.FinalLoss.ToString("R", c), r.ValidationLoss?.ToString("R", c) ?? "", r.ValidationIteration?.ToString(c) ?? "", r.ValidationDelta?.ToString("R", c) ?? "",
                r.MedianStepMs.ToString("R", c)))
            .Prepend("run,layout,sync_factor,iterations,tokens,final_loss,validation_loss,validation_iteration,validation_delta,median_step_ms"));
    }
}
