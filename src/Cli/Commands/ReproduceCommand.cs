using Harness.Cli.Output;
using Harness.Megatron;
using Harness.Reproduce;
using Spectre.Console;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness reproduce NAME|FILE|all`: simulates every row of published tables (experiments/*.json), prints
/// published vs simulated with the error per row and the mean absolute and worst error per table and overall,
/// and writes results/reproductions/NAME.csv and NAME.png. `--json` prints the errors as one JSON object.
/// </summary>
public static class ReproduceCommand
{
    private const string Usage =
        "usage: harness reproduce NAME|FILE|all [--json] [--experiments DIR] [--out DIR] [--no-files]\n" +
        "  NAME          an experiment in experiments/ (e.g. kwai-atc24-table8); FILE a path to one; all: every one\n" +
        "  --json        print per-table and overall errors as JSON instead of tables\n" +
        "  --experiments folder of experiment files (default: ./experiments or the nearest one above)\n" +
        "  --out         folder for NAME.csv and NAME.png (default: results/reproductions next to experiments/)\n" +
        "  --no-files    do not write CSV and PNG files";

    private static readonly string[] Options = ["--json", "--experiments", "--out", "--no-files", "--help"];

    public static int Run(string[] args)
    {
        string? spec = null, experimentsDir = null, outDir = null;
        bool json = false, files = true;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "-h" or "--help":
                    Console.Out.WriteLine(Usage);
                    return 0;
                case "--json": json = true; break;
                case "--no-files": files = false; break;
                case "--experiments" when i + 1 < args.Length: experimentsDir = args[++i]; break;
                case "--out" when i + 1 < args.Length: outDir = args[++i]; break;
                case var a when a.StartsWith("--", StringComparison.Ordinal):
                    return Fail(Spelling.Closest(a, Options) is string closest && closest != a
                        ? $"unknown option '{a}'; did you mean {closest}?"
                        : $"unknown or incomplete option '{a}'; valid: {string.Join(", ", Options)}.");
                case var a when spec is null: spec = a; break;
                default:
                    return Fail($"unexpected argument '{args[i]}'; give one of NAME, FILE or all.");
            }
        }
        if (spec is null) return Fail("name the tables: NAME, FILE or all.");

        experimentsDir ??= ExperimentLoader.FindExperimentsDirectory();
        outDir ??= Path.Combine(Path.GetDirectoryName(Path.GetFullPath(experimentsDir ?? "experiments"))!, "results", "reproductions");
        if (files && OutputFolder.Create(outDir) is string outError) return Fail(outError);
        ReproductionSummary summary;
        try
        {
            var experiments = ExperimentLoader.Resolve(spec, experimentsDir);
            summary = new Reproducer(SimulatorSteps.Estimate).Run(experiments);
        }
        catch (ExperimentException e)
        {
            return Fail(e.Message);
        }

        if (files)
        {
            foreach (var t in summary.Tables)
            {
                ReproductionCsv.Write(t, Path.Combine(outDir, t.Experiment.Name + ".csv"));
                ReproductionPlot.Write(t, Path.Combine(outDir, t.Experiment.Name + ".png"));
            }
        }
        if (json) Console.Out.WriteLine(ReproductionJson.Write(summary));
        else Render(summary, files ? outDir : null);
        return 0;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"harness reproduce: {message}");
        return 2;
    }

    private static void Render(ReproductionSummary summary, string? outDir)
    {
        var console = Terminal.Out;
        // Piped to a file or CI log, Spectre assumes 80 columns; the tables need about 140.
        if (Console.IsOutputRedirected) console.Profile.Width = Math.Max(console.Profile.Width, 150);
        foreach (var t in summary.Tables)
        {
            var e = t.Experiment;
            var metric = e.PaperMetric;
            var table = new Table().Title($"[bold]{Markup.Escape(e.Name)}[/]: {Markup.Escape(e.Title)}")
                .AddColumn("row").AddColumn("configuration (* chosen)").AddColumn(new TableColumn($"published {metric.Unit()}").RightAligned())
                .AddColumn(new TableColumn($"simulated {metric.Unit()}").RightAligned()).AddColumn(new TableColumn("error").RightAligned())
                .AddColumn(new TableColumn("% of peak").RightAligned()).AddColumn("fits (paper / sim)");
            foreach (var r in t.Rows)
            {
                string fits = $"{(r.Row.Published.Oom ? "OOM" : "fits")} / {(r.Step.Fits ? "fits" : "OOM")}";
                table.AddRow(
                    Markup.Escape(r.Row.Label),
                    Markup.Escape(Configuration(r)),
                    r.Published is { } p ? Format(metric, p) : "OOM",
                    Format(metric, r.Simulated),
                    r.Error is { } err ? Colour(err, $"{Math.Round(err, 3):+0.0%;-0.0%;0.0%}") : "",
                    metric.IsThroughput() ? $"{r.SimulatedFractionOfPeak:P1}" : "",
                    r.FitDecisionRight ? fits : $"[red]{fits}[/]");
            }
            console.Write(table);
            console.MarkupLine($"  {(e.HeldOut ? "held out: " : "")}MAPE [bold]{t.Errors.Mape:P2}[/], max {t.Errors.MaxAbs:P2} ({Markup.Escape(t.Errors.Worst ?? "-")}); " +
                $"fit decisions right {t.FitDecisionsRight}/{t.Rows.Count}" +
                (e.Order is null ? "" : t.Order.Right ? "; method order right" : $"; [red]method order wrong: {Markup.Escape(string.Join("; ", t.Order.Violations))}[/]"));
            console.MarkupLine($"  source: {Markup.Escape(e.Source.Paper)}, {Markup.Escape(e.Source.Where)} ({Markup.Escape(e.Source.Url)})");
            console.WriteLine();
        }
        // Only what the selection has: a held-out table alone pools no throughput row and no memory point.
        var overall = new List<string>();
        if (summary.Throughput.Count > 0)
            overall.Add($"throughput: MAPE {summary.Throughput.Mape:P2}, max {summary.Throughput.MaxAbs:P2} over {summary.Throughput.Count} rows");
        if (summary.Memory.Count > 0)
            overall.Add($"memory: MAPE {summary.Memory.Mape:P2}, max {summary.Memory.MaxAbs:P2} over {summary.Memory.Count} points");
        overall.Add($"fit decisions right {summary.FitDecisionsRight}/{summary.FitDecisions}");
        overall.Add($"method order {(summary.OrderRight ? "right" : "[red]wrong[/]")}");
        console.MarkupLine($"[bold]overall[/] {string.Join("; ", overall)}");
        if (summary.HeldOut.Count > 0)
            console.MarkupLine($"[bold]held out[/] (generalization, not pooled above): throughput MAPE {summary.HeldOut.Mape:P2}, " +
                $"max {summary.HeldOut.MaxAbs:P2} ({Markup.Escape(summary.HeldOut.Worst ?? "-")}) over {summary.HeldOut.Count} rows");
        if (outDir is not null) console.MarkupLine($"wrote CSV and PNG per table to {Markup.Escape(outDir)}");
    }

    /// <summary>t, c, p, d, layers per virtual stage l, micro-batch b and offload ratio; knobs the reproduction chose carry a star.</summary>
    private static string Configuration(RowResult r)
    {
        var c = r.Setup.Config;
        var a = r.Setup.Args;
        bool chose = r.Choice.Length > 0;
        string s = $"t{c.TensorParallel} c{c.ContextParallel} p{c.PipelineParallel} d{c.DataParallel}";
        if (c.LayersPerVirtualStage is int l) s += $" l{l}{(chose && !a.Sets("num-layers-per-virtual-pipeline-stage") ? "*" : "")}";
        s += $" b{c.MicroBatch}{(chose && !a.Sets("micro-batch-size") ? "*" : "")}";
        if (c.OffloadRatio > 0) s += $" α{c.OffloadRatio:0.##}";
        return s;
    }

    private static string Format(PaperMetric m, double v) => m switch
    {
        PaperMetric.PeakMemoryBytes => $"{v / 1e9:F2} GB",
        PaperMetric.TflopsPerGpu => $"{v:F1}",
        _ => $"{v:F0}",
    };

    private static string Colour(double error, string text) =>
        Math.Abs(error) <= 0.03 ? $"[green]{text}[/]" : Math.Abs(error) <= 0.06 ? $"[yellow]{text}[/]" : $"[red]{text}[/]";
}
