
namespace Harness.Executor.Training.Records;

/// <summary>PNG plots of a run (ScottPlot): loss (and the validation loss where it was computed) and throughput per iteration.</summary>
public static class Plots
{
    public static void Write(string directory, IReadOnlyList<IterationRecord> records, string title)
    {
        if (records.Count == 0) return;
        double[] x = records.Select(r => (double)r.Iteration).ToArray();
        var validated = records.Where(r => r.ValidationLoss is not null).ToList();
        Save(Path.Combine(directory, "loss.png"), x, records.Select(r => r.Loss).ToArray(), title, "loss",
            validated.Count == 0 ? null : (validated.Select(r => (double)r.Iteration).ToArray(), validated.Select(r => r.ValidationLoss!.Value).ToArray()));
        Save(Path.Combine(directory, "throughput.png"), x, records.Select(r => r.TokensPerSecondPerGpu).ToArray(), title, "tokens/s per GPU");
    }

    /// <summary>Several runs' losses in one plot (harness compare): each run's training loss as a line, its validation losses
    /// as markers in the same colour, labelled by the run's name.</summary>
    public static void Compare(string path, IReadOnlyList<(string Name, IReadOnlyList<IterationRecord> Records)> runs, string title)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (name, records) in runs.Where(r => r.Records.Count > 0))
        {
            var train = plot.Add.Scatter(records.Select(r => (double)r.Iteration).ToArray(), records.Select(r => r.Loss).ToArray());
            train.LegendText = name;
            train.MarkerSize = 0;
            var validated = records.Where(r => r.ValidationLoss is not null).ToList();
            if (validated.Count == 0) continue;
            var v = plot.Add.ScatterPoints(validated.Select(r => (double)r.Iteration).ToArray(), validated.Select(r => r.ValidationLoss!.Value).ToArray());
            v.Color = train.Color;
            v.MarkerSize = 9;
            v.LegendText = $"{name} (validation)";
        }
        plot.ShowLegend();
        plot.Title(title);
        plot.XLabel("iteration");
        plot.YLabel("loss (lines: training; markers: validation)");
        plot.SavePng(path, 1000, 620);
    }

    private static void Save(string path, double[] x, double[] y, string title, string label, (double[] X, double[] Y)? validation = null)
    {
        var plot = new ScottPlot.Plot();
        var train = plot.Add.Scatter(x, y);
        if (validation is var (vx, vy))
        {
            train.LegendText = "training";
            plot.Add.Scatter(vx, vy).LegendText = "validation";
            plot.ShowLegend();
        }
        plot.Title(title);
        plot.XLabel("iteration");
        plot.YLabel(label);
        plot.SavePng(path, 800, 500);
    }
}
