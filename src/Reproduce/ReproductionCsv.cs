using CsvHelper;

namespace Harness.Reproduce;

/// <summary>Writes a reproduced table to results/reproductions/NAME.csv, one line per row.</summary>
public static partial class ReproductionCsv
{
    /// <summary>One CSV line: the row, its configuration, published and simulated values, error and fit decision.</summary>
    [CsvRecord]
    public sealed partial record Line(
        string Table, string Row, string Group, string Method, string Gpu, int Gpus,
        int Tensor, int Context, int Pipeline, int Data, int? LayersPerVirtualStage, int MicroBatch, int GlobalBatch,
        string Recompute, double OffloadRatio, string Chosen, string Metric,
        double? Published, double Simulated, double? Error, bool PublishedOom, bool SimulatedFits,
        double StepTimeSeconds, double TokensPerSecondPerGpu, double FractionOfPeak, long PeakMemoryBytes);

    public static IEnumerable<Line> Lines(TableResult t) => t.Rows.Select(r =>
    {
        var c = r.Setup.Config;
        var rc = c.RecomputeOrNone;
        string recompute = rc.Granularity != Harness.Simulator.Specs.RecomputeGranularity.None
            ? rc.Granularity.ToString().ToLowerInvariant()
            : rc.NormOutputs || rc.MlpActivation ? "kwai (norm, swiglu)" : "none";
        return new Line(t.Experiment.Name, r.Row.Label, r.Row.Group ?? "", r.Row.Method ?? "", r.Setup.Cluster.Gpu.Name,
            r.Setup.Cluster.WorldSize, c.TensorParallel, c.ContextParallel, c.PipelineParallel, c.DataParallel,
            c.LayersPerVirtualStage, c.MicroBatch, c.GlobalBatch, recompute, c.OffloadRatio, r.Choice, t.Experiment.Metric,
            r.Published, r.Simulated, r.Error, r.Row.Published.Oom, r.Step.Fits,
            r.Step.StepTimeSeconds, r.Step.TokensPerSecondPerGpu, r.SimulatedFractionOfPeak, r.Step.PeakMemoryBytes);
    });

    public static void Write(TableResult t, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        using var writer = new StreamWriter(path);
        using var csv = CsvWriter.Create(writer, null, leaveOpen: false);
        csv.WriteRecords(Lines(t));
    }
}
