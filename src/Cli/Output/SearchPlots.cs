using Harness.Search;
using ScottPlot;

namespace Harness.Cli.Output;

/// <summary>
/// `harness search`'s plots: throughput against peak memory for every evaluated configuration with the Pareto
/// front marked, and (when several sync factors were searched) throughput against p.
/// </summary>
public static class SearchPlots
{
    private const double GiB = 1L << 30;

    /// <summary>Writes the plots into <paramref name="folder"/>; returns their paths.</summary>
    public static IReadOnlyList<string> Write(string folder, SearchResult result)
    {
        Directory.CreateDirectory(folder);
        var paths = new List<string> { ThroughputVsMemory(Path.Combine(folder, "throughput-vs-memory.png"), result) };
        if (result.Space.Constraints.SyncFactors.Count > 1)
            paths.Add(ThroughputVsSyncFactor(Path.Combine(folder, "throughput-vs-sync-factor.png"), result));
        return paths;
    }

    private static void Points(Plot plot, IEnumerable<Evaluated> points, Color color, float size, string label)
    {
        var list = points.ToList();
        if (list.Count == 0) return;
        var s = plot.Add.ScatterPoints(list.Select(e => e.Cost.PeakMemoryBytes / GiB).ToArray(),
            list.Select(e => e.Cost.TokensPerSecondPerGpu).ToArray(), color);
        s.MarkerSize = size;
        s.LegendText = label;
    }

    private static string ThroughputVsMemory(string path, SearchResult r)
    {
        var plot = new Plot();
        Points(plot, r.Evaluations.Where(e => !e.Fits), Colors.LightCoral.WithAlpha(0.4), 3, "does not fit");
        Points(plot, r.Evaluations.Where(e => e.Fits), Colors.SteelBlue.WithAlpha(0.4), 3, "fits");
        var front = r.ParetoFront.OrderBy(e => e.Cost.PeakMemoryBytes).ToList();
        if (front.Count > 0)
        {
            var line = plot.Add.Scatter(front.Select(e => e.Cost.PeakMemoryBytes / GiB).ToArray(),
                front.Select(e => e.Cost.TokensPerSecondPerGpu).ToArray(), Colors.DarkOrange);
            line.ConnectStyle = ConnectStyle.StepVertical;
            line.MarkerSize = 6;
            line.LineWidth = 2;
            line.LegendText = "Pareto front";
        }
        if (r.Best is Evaluated best)
        {
            var star = plot.Add.Marker(best.Cost.PeakMemoryBytes / GiB, best.Cost.TokensPerSecondPerGpu, MarkerShape.FilledDiamond, 12, Colors.Black);
            star.LegendText = "best: " + PaperNotation.Short(best.Config);
        }
        var limit = plot.Add.VerticalLine(r.Space.MemoryLimitBytes / GiB, 1, Colors.Gray, LinePattern.Dashed);
        limit.LegendText = "memory limit";
        // Configurations far over the limit would squeeze the interesting part into a corner: show up to 1.5x it.
        double xMax = 1.5 * r.Space.MemoryLimitBytes / GiB;
        int beyond = r.Evaluations.Count(e => e.Cost.PeakMemoryBytes / GiB > xMax);
        plot.Axes.SetLimits(0, xMax, 0, 1.05 * r.Evaluations.Where(e => e.Cost.PeakMemoryBytes / GiB <= xMax).Select(e => e.Cost.TokensPerSecondPerGpu).DefaultIfEmpty(1).Max());
        return Save(plot, r, path, beyond > 0 ? $"peak memory per GPU (GiB; {beyond} configs above {xMax:0} GiB not shown)" : "peak memory per GPU (GiB)");
    }

    private static string Save(Plot plot, SearchResult r, string path, string xLabel)
    {
        plot.Title($"{r.Space.Model.Name} on {r.Space.Cluster.WorldSize} x {r.Space.Cluster.Gpu.Name}, s {r.Space.Model.SeqLength}, global batch {r.Space.GlobalBatch}");
        plot.XLabel(xLabel);
        plot.YLabel("tokens/s per GPU");
        plot.ShowLegend(Alignment.LowerRight);
        plot.SavePng(path, 1000, 650);
        return path;
    }

    private static string ThroughputVsSyncFactor(string path, SearchResult r)
    {
        var plot = new Plot();
        var fits = r.Evaluations.Where(e => e.Fits).ToList();
        var all = plot.Add.ScatterPoints(fits.Select(e => e.Config.SyncFactor).ToArray(), fits.Select(e => e.Cost.TokensPerSecondPerGpu).ToArray(),
            Colors.SteelBlue.WithAlpha(0.3));
        all.LegendText = "evaluated, fits";
        var best = fits.GroupBy(e => e.Config.SyncFactor).Select(g => g.MaxBy(e => e.Cost.TokensPerSecondPerGpu)!).OrderBy(e => e.Config.SyncFactor).ToList();
        if (best.Count > 0)
        {
            var line = plot.Add.Scatter(best.Select(e => e.Config.SyncFactor).ToArray(), best.Select(e => e.Cost.TokensPerSecondPerGpu).ToArray(), Colors.DarkOrange);
            line.LineWidth = 2;
            line.MarkerSize = 8;
            line.LegendText = "best at each p";
        }
        return Save(plot, r, path, "sync factor p (fraction of hidden channels all-reduced)");
    }
}
