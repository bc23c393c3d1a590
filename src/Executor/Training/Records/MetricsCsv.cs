using System.Globalization;
using CsvHelper;

namespace Harness.Executor.Training.Records;

/// <summary>
/// metrics.csv: one row per iteration, written and flushed to the file as soon as the iteration ends, so a crash
/// or Ctrl-C loses no recorded row. A resumed run (--load) appends to the file it finds. Empty fields: no gradient norm
/// for a skipped iteration, no loss scale for a run that scales none, no communication for a single device, no validation loss between evaluations.
/// </summary>
public sealed class MetricsCsv : IDisposable
{
    private readonly StreamWriter stream;
    private readonly CsvWriter csv;

    public static readonly string[] Columns =
    {
        "iteration", "elapsed_ms", "tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu", "loss", "grad_norm",
        "learning_rate", "memory_used_bytes", "memory_peak_bytes", "host_gap_ms", "enqueue_ms", "communication_ms",
        "loss_scale", "skipped_iterations", "validation_loss",
    };

    public MetricsCsv(string path, bool append)
    {
        bool header = !append || !File.Exists(path) || new FileInfo(path).Length == 0;
        stream = new StreamWriter(new FileStream(path, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.Read));
        csv = CsvWriter.Create(stream, new CsvWriterOptions(), leaveOpen: true);
        if (header) WriteRow(Columns);
    }

    public void Append(IterationRecord r)
    {
        var c = CultureInfo.InvariantCulture;
        WriteRow(new[]
        {
            r.Iteration.ToString(c), r.ElapsedMs.ToString("F3", c), r.TokensPerSecondPerGpu.ToString("F1", c),
            r.ModelTflopsPerGpu.ToString("F4", c), r.Mfu?.ToString("F4", c) ?? "", r.Loss.ToString("R", c),
            r.GradNorm?.ToString("R", c) ?? "", r.LearningRate.ToString("R", c), r.MemoryUsedBytes.ToString(c),
            r.MemoryPeakBytes.ToString(c), r.HostGapMs.ToString("F3", c), r.EnqueueMs.ToString("F3", c),
            r.CommunicationMs?.ToString("F3", c) ?? "", r.LossScale?.ToString("R", c) ?? "", r.SkippedIterations.ToString(c),
            r.ValidationLoss?.ToString("R", c) ?? "",
        });
    }

    private void WriteRow(string[] fields)
    {
        foreach (var f in fields) csv.WriteField(f);
        csv.EndRecord();
        csv.Flush();
        stream.Flush();
    }

    public void Dispose()
    {
        csv.Dispose();
        stream.Dispose();
    }
}
