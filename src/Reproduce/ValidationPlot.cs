using ScottPlot;

namespace Harness.Reproduce;

/// <summary>
/// Runs beside the simulator in one picture, in the order they were given: the measured and the simulated allocated peak
/// (upper panel) and step time (lower panel) per run. A sweep given in order (offloaded layers per recomputation mode, as
/// Megatron-Kwai's Figure 7 sets memory against the offloaded share) reads as curves, measured against simulated.
/// </summary>
public static class ValidationPlot
{
    private const double GiB = 1L << 30;

    public static void Write(IReadOnlyList<RunValidation> rows, string path, string title)
    {
        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        var memory = multiplot.GetPlot(0);
        Panel(memory, rows, r => r.MeasuredAllocatedPeakBytes / GiB, r => r.Estimate.PeakMemoryBytes / GiB, "GiB allocated, peak");
        memory.Title(title);
        Panel(multiplot.GetPlot(1), rows, r => r.MeasuredStepSeconds * 1e3, r => r.Estimate.StepTimeSeconds * 1e3, "step ms");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        multiplot.SavePng(path, Math.Max(900, 60 * rows.Count), 900);
    }

    /// <summary>One panel: the measured values as filled circles (runs that could not measure it left out), the simulated as
    /// open squares joined by a dashed line, the runs' names along the bottom.</summary>
    private static void Panel(Plot plot, IReadOnlyList<RunValidation> rows, Func<RunValidation, double?> measured,
        Func<RunValidation, double> simulated, string unit)
    {
        double[] xs = Enumerable.Range(0, rows.Count).Select(i => (double)i).ToArray();
        var measuredPoints = rows.Select((r, i) => (X: (double)i, Y: measured(r))).Where(p => p.Y is not null).ToList();
        if (measuredPoints.Count > 0)
        {
            var run = plot.Add.ScatterPoints(measuredPoints.Select(p => p.X).ToArray(), measuredPoints.Select(p => p.Y!.Value).ToArray());
            run.MarkerSize = 10;
            run.MarkerShape = MarkerShape.FilledCircle;
            run.LegendText = "measured";
        }
        var sim = plot.Add.Scatter(xs, rows.Select(simulated).ToArray());
        sim.MarkerSize = 10;
        sim.MarkerShape = MarkerShape.OpenSquare;
        sim.LinePattern = LinePattern.Dashed;
        sim.LegendText = "simulated";
        plot.Axes.Bottom.SetTicks(xs, rows.Select(r => r.Run).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 150;
        plot.YLabel(unit);
        plot.ShowLegend(Alignment.UpperRight);
    }
}
