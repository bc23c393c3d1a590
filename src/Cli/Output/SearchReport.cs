using System.Globalization;
using Harness.Search;
using Spectre.Console;

namespace Harness.Cli.Output;

/// <summary>`harness search`'s tables: the top K, the Pareto front, what the search covered, and why nothing fit.</summary>
public static class SearchReport
{
    private const double GiB = 1L << 30;

    private static string F(double x, string format) => x.ToString(format, CultureInfo.InvariantCulture);

    private static Table ConfigTable(string title, IEnumerable<Evaluated> rows)
    {
        var table = new Table().Title(title).Border(TableBorder.Rounded);
        table.AddColumns("#", "config", "tokens/s/GPU", "MFU", "peak GiB", "biggest cost");
        int i = 0;
        Evaluated? previous = null;
        foreach (var e in rows)
        {
            // "=": the simulator rates it exactly like the row above (e.g. selective recompute under flash attention).
            bool tie = previous is not null && previous.Cost.StepTimeSeconds == e.Cost.StepTimeSeconds
                && previous.Cost.PeakMemoryBytes == e.Cost.PeakMemoryBytes;
            previous = e;
            var cells = new List<string>
            {
                (++i).ToString(CultureInfo.InvariantCulture) + (tie ? "=" : ""), Markup.Escape(PaperNotation.Short(e.Config)),
                F(e.Cost.TokensPerSecondPerGpu, "0"), F(100 * e.Cost.Mfu, "0.0") + "%",
                F(e.Cost.PeakMemoryBytes / GiB, "0.0"), Markup.Escape(e.Cost.BiggestCost),
            };
            table.AddRow(cells.ToArray());
        }
        return table;
    }

    public static void PrintTop(SearchResult r)
    {
        bool withP = r.Space.Constraints.SyncFactors.Count > 1;
        Terminal.Out.Write(ConfigTable($"Top {r.Top.Count} of {r.Counts.Enumerated:N0} configurations ({r.Space.Constraints.Implementation.Precision.ToString().ToLowerInvariant()}, limit {F(r.Space.MemoryLimitBytes / GiB, "0.#")} GiB)", r.Top));
        Terminal.Out.MarkupLine("[grey]config: data d, tensor t, context c, pipeline p, layers per virtual stage l, micro-batch mb, sequence parallel sp, recomputation, offload ratio a, ZeRO stage z, sync factor p if below 1 (sync)[/]");
        const int shown = 12;
        string cutoff = r.Options.ParetoMinThroughputFraction > 0
            ? $", within {F(100 * r.Options.ParetoMinThroughputFraction, "0")}% of the best throughput" : "";
        Terminal.Out.Write(ConfigTable($"Pareto front: throughput, memory headroom{(withP ? ", sync factor p" : "")} ({r.ParetoFront.Count} configs{cutoff}, fastest first)",
            r.ParetoFront.Take(shown)));
        if (r.ParetoFront.Count > shown) Terminal.Out.MarkupLine($"[grey](the front's other {r.ParetoFront.Count - shown} configs, down to {F(r.ParetoFront.Min(e => e.Cost.PeakMemoryBytes) / GiB, "0.0")} GiB, are in the CSV: column pareto)[/]");
    }

    public static void PrintCounts(SearchResult r)
    {
        var c = r.Counts;
        Terminal.Out.MarkupLine($"Searched [bold]{c.Enumerated:N0}[/] valid configurations ({c.Layouts:N0} layouts) in [bold]{F(c.WallTime.TotalSeconds, "0.000")} s[/] " +
            $"on {r.Space.Cluster.WorldSize} x {Markup.Escape(r.Space.Cluster.Gpu.Name)}: [bold]{F(c.ConfigsPerSecond, "N0")}[/] configurations/s, " +
            $"{F(c.EvaluationsPerSecond, "N0")} full evaluations/s.");
        Terminal.Out.MarkupLine($"  fully evaluated {c.Evaluated:N0}; pruned {c.PrunedTotal:N0}:");
        foreach (var (rule, n) in c.Pruned.Where(kv => kv.Value > 0).OrderByDescending(kv => kv.Value))
            Terminal.Out.MarkupLine($"    {rule,-22} {n,14:N0}");
        if (c.BoundViolations == 0)
            Terminal.Out.MarkupLine("  exhaustive: every pruned configuration was proven unable to enter the top K or the Pareto front (0 bound violations).");
        else
        {
            Terminal.Out.MarkupLine($"  [red]{c.BoundViolations} bound violations: the cost model broke a property the pruning relies on; the result may not be the best.[/]");
            foreach (var v in c.ViolationExamples) Terminal.Out.MarkupLine($"    [red]{Markup.Escape(v)}[/]");
        }
    }

    /// <summary>Nothing fits: the configurations closest to fitting, and the smallest weights-plus-optimizer footprint.</summary>
    public static void PrintNothingFits(SearchResult r)
    {
        var w = Console.Error;
        w.WriteLine($"harness search: none of the {r.Counts.Enumerated:N0} valid configurations fits in {F(r.Space.MemoryLimitBytes / GiB, "0.##")} GiB per GPU.");
        if (r.SmallestStaticMiss is { } s && (r.NearMisses.Count == 0 || s.StaticBytes < r.NearMisses[0].Cost.PeakMemoryBytes))
            w.WriteLine($"  weights, gradients and optimizer states alone need at least {F(s.StaticBytes / GiB, "0.0")} GiB ({PaperNotation.Short(s.Config)}).");
        if (r.NearMisses.Count > 0)
        {
            w.WriteLine("  closest to fitting (peak memory per GPU):");
            foreach (var e in r.NearMisses.Take(5))
                w.WriteLine($"    {F(e.Cost.PeakMemoryBytes / GiB, "0.0"),7} GiB  {PaperNotation.Short(e.Config)}");
        }
        w.WriteLine("  More GPUs, a larger --memory-limit, or widening the constraints (offload, recompute, ZeRO stage) may help.");
    }

    /// <summary>No valid configuration at all: the closest factorizations and every reason each is invalid.</summary>
    public static void PrintEmptySpace(SearchSpace space)
    {
        var w = Console.Error;
        w.WriteLine($"harness search: no valid configuration of {space.Model.Name} on {space.Cluster.WorldSize} GPUs with global batch {space.GlobalBatch} within the constraints.");
        foreach (var miss in SpaceDiagnosis.WhyEmpty(space))
        {
            w.WriteLine($"  {PaperNotation.Short(miss.Config)}:");
            foreach (var reason in miss.Reasons) w.WriteLine($"    - {reason}");
        }
    }
}
