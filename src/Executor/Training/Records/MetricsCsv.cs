using System.Globalization;
using CsvHelper;

namespace Harness.Executor.Training.Records;

/// <summary>
/// metrics.csv: one row per iteration, written and flushed to the file as soon as the iteration ends, so a crash
/// or a signal loses no recorded row. A resumed run (--load) keeps the rows it finds up to its checkpoint's iteration
/// (<see cref="Read"/>, <see cref="Rewrite"/>) and goes on after them: one run, one continuous file. Empty fields: no
/// gradient norm for a skipped iteration, no loss scale for a run that scales none, no communication for a single device,
/// no validation loss between evaluations, no allocated peak off a GPU.
/// </summary>
public sealed class MetricsCsv : IDisposable
{
    private readonly StreamWriter stream;
    private readonly CsvWriter csv;

    public static readonly string[] Columns =
    {
        "iteration", "elapsed_ms", "tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu", "loss", "grad_norm",
        "learning_rate", "memory_used_bytes", "memory_peak_bytes", "host_gap_ms", "enqueue_ms", "communication_ms",
        "loss_scale", "skipped_iterations", "validation_loss", "allocated_peak_bytes",
    };

    /// <summary>A new metrics.csv at <paramref name="path"/> holding <paramref name="earlier"/> rows; written beside it and
    /// moved over it, so the file on disk is never left without the rows it held.</summary>
    public static MetricsCsv Rewrite(string path, IEnumerable<IterationRecord> earlier)
    {
        string next = path + ".next";
        using (var rewritten = new MetricsCsv(next))
            foreach (var r in earlier) rewritten.Append(r);
        File.Move(next, path, overwrite: true);
        return new MetricsCsv(path, append: true);
    }

    private MetricsCsv(string path, bool append = false)
    {
        stream = new StreamWriter(new FileStream(path, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.Read));
        csv = CsvWriter.Create(stream, new CsvWriterOptions(), leaveOpen: true);
        if (!append) WriteRow(Columns);
    }

    /// <summary>Whether a metrics.csv at <paramref name="path"/> holds a row (a run that failed before its first iteration
    /// leaves only the header).</summary>
    public static bool HoldsRows(string path) => File.Exists(path) && File.ReadLines(path).Skip(1).Any(l => l.Length > 0);

    /// <summary>The rows of the metrics.csv at <paramref name="path"/> (none when there is no file); InvalidDataException when
    /// it is not one this class wrote.</summary>
    public static IReadOnlyList<IterationRecord> Read(string path)
    {
        if (!File.Exists(path)) return [];
        var lines = File.ReadAllLines(path);
        if (lines.Length == 0) return [];
        if (lines[0] != string.Join(',', Columns)) throw new InvalidDataException($"{path} does not start with the metrics.csv header harness run writes; move it away to resume into this --out.");
        var c = CultureInfo.InvariantCulture;
        double? Optional(string f) => f.Length == 0 ? null : double.Parse(f, c);
        try
        {
            return lines.Skip(1).Where(l => l.Length > 0).Select(l => l.Split(',')).Select(f => new IterationRecord(
                long.Parse(f[0], c), double.Parse(f[1], c), double.Parse(f[2], c), double.Parse(f[3], c), Optional(f[4]), double.Parse(f[5], c),
                Optional(f[6]), double.Parse(f[7], c), long.Parse(f[8], c), long.Parse(f[9], c), double.Parse(f[10], c), double.Parse(f[11], c),
                Optional(f[12]), Optional(f[13]), long.Parse(f[14], c), Optional(f[15]), f[16].Length == 0 ? null : long.Parse(f[16], c))).ToList();
        }
        catch (Exception e) when (e is FormatException or IndexOutOfRangeException or OverflowException)
        {
            throw new InvalidDataException($"{path} holds a row that is not one harness run writes; move it away to resume into this --out.");
        }
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
            r.ValidationLoss?.ToString("R", c) ?? "", r.AllocatedPeakBytes?.ToString(c) ?? "",
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
