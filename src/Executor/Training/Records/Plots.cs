
namespace Harness.Executor.Training.Records;

/// <summary>PNG plots of a run (ScottPlot): loss and throughput per iteration.</summary>
public static class Plots
{
    public static void Write(string directory, IReadOnlyList<IterationRecord> records, string title)
    {
        if (records.Count == 0) return;
        double[] x = records.Select(r => (double)r.Iteration).ToArray();
        Save(Path.Combine(directory, "loss.png"), x, records.Select(r => r.Loss).ToArray(), title, "loss");
        Save(Path.Combine(directory, "throughput.png"), x, records.Select(r => r.TokensPerSecondPerGpu).ToArray(), title, "tokens/s per GPU");
    }

    private static void Save(string path, double[] x, double[] y, string title, string label)
    {
        var plot = new ScottPlot.Plot();
        plot.Add.Scatter(x, y);
        plot.Title(title);
        plot.XLabel("iteration");
        plot.YLabel(label);
        plot.SavePng(path, 800, 500);
    }
}
