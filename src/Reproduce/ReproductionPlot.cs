using ScottPlot;

namespace Harness.Reproduce;

/// <summary>Draws a reproduced table as published vs simulated, one marker per row, with the y = x line.</summary>
public static class ReproductionPlot
{
    public static void Write(TableResult t, string path)
    {
        var metric = t.Experiment.PaperMetric;
        double scale = metric == PaperMetric.PeakMemoryBytes ? 1e-9 : 1;
        var plotted = t.Rows.Where(r => r.Published is not null).ToList();
        var plt = new Plot();
        double lo = double.MaxValue, hi = double.MinValue;
        foreach (var group in plotted.GroupBy(r => r.Row.Group ?? ""))
        {
            double[] xs = group.Select(r => r.Published!.Value * scale).ToArray();
            double[] ys = group.Select(r => r.Simulated * scale).ToArray();
            var points = plt.Add.ScatterPoints(xs, ys);
            points.MarkerSize = 9;
            if (group.Key.Length > 0) points.LegendText = group.Key;
            lo = Math.Min(lo, Math.Min(xs.Min(), ys.Min()));
            hi = Math.Max(hi, Math.Max(xs.Max(), ys.Max()));
        }
        if (plotted.Count > 0)
        {
            double pad = 0.05 * (hi - lo + 1e-9);
            var diagonal = plt.Add.Line(lo - pad, lo - pad, hi + pad, hi + pad);
            diagonal.LinePattern = LinePattern.Dashed;
            diagonal.Color = Colors.Gray;
            diagonal.LegendText = "y = x";
            plt.Axes.SetLimits(lo - pad, hi + pad, lo - pad, hi + pad);
        }
        int oom = t.Rows.Count - plotted.Count;
        plt.Title($"{t.Experiment.Name}: MAPE {t.Errors.Mape:P1}, max {t.Errors.MaxAbs:P1}" + (oom > 0 ? $" ({oom} OOM rows not plotted)" : ""));
        plt.XLabel($"published {metric.Unit()}");
        plt.YLabel($"simulated {metric.Unit()}");
        plt.ShowLegend(Alignment.LowerRight);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plt.SavePng(path, 800, 640);
    }
}
