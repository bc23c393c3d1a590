using Harness.Executor.Offload;

namespace Harness.Executor.Training.Records;

/// <summary>
/// The one writer of a run's records (rank 0 of a parallel run): metrics.csv row by row as each iteration ends, a progress
/// line every --log-interval iterations and after the last, and summary.json with the loss and throughput plots once the
/// run ends, or fails after recording some iterations; when the run offloads activations, offload.csv with every rank's
/// bookkeeping of the last step once it ends. A run resumed with --load is one run with the iterations before its
/// checkpoint: the rows metrics.csv holds up to the checkpoint's iteration stay (those past it, from the attempt that
/// was interrupted, are replaced), and summary.json and the plots cover them all. With --tensorboard-dir each row's scalars
/// also go to a TensorBoard event file as the row is written; a resumed run starts a new file in the same folder (TensorBoard
/// reads a folder's files as one run, and drops the points an interrupted attempt wrote past the step it resumed at).
/// </summary>
public sealed class RunRecorder : IDisposable
{
    private readonly string output;
    private readonly RunRecord run;
    private readonly Action<string> log;
    private readonly string path;
    private MetricsCsv? csv;
    private TensorBoardLog? tensorBoard;
    private IReadOnlyList<IterationRecord> earlier = [];
    private readonly List<IterationRecord> rows = new();
    private long skippedAtLastLine;

    public RunRecorder(string output, RunRecord run, Action<string> log)
    {
        (this.output, this.run, this.log) = (output, run, log);
        Directory.CreateDirectory(output);
        path = Path.Combine(output, "metrics.csv");
    }

    /// <summary>Starts metrics.csv after <paramref name="resumedAt"/> iterations (0: a new run): the rows it holds up to them
    /// stay when the run resumed.</summary>
    public void Begin(long resumedAt)
    {
        earlier = resumedAt > 0 ? MetricsCsv.Read(path).Where(r => r.Iteration <= resumedAt).ToList() : [];
        csv = MetricsCsv.Rewrite(path, earlier);
        if (run.Settings.TensorBoardOrDefault.Dir is not null) tensorBoard = new TensorBoardLog(run.Settings.TensorBoardOrDefault, run.Description);
    }

    /// <summary>The iterations this process recorded so far.</summary>
    public IReadOnlyList<IterationRecord> Rows => rows;

    public void Append(IterationRecord r)
    {
        if (csv is null) throw new InvalidOperationException("RunRecorder.Begin comes before the first row.");
        csv.Append(r);
        tensorBoard?.Append(r);
        // Before this process's first row, the count the run resumed with.
        if (rows.Count == 0) skippedAtLastLine = r.SkippedIterations - (r.GradNorm is null ? 1 : 0);
        rows.Add(r);
        if (r.Iteration % Math.Max(1, run.Settings.LogInterval) == 0 || r.Iteration == run.Settings.TrainIters)
        {
            log(ProgressLines.Iteration(r, run, Remaining(r.Iteration), r.SkippedIterations - skippedAtLastLine));
            skippedAtLastLine = r.SkippedIterations;
        }
        if (r.ValidationLoss is double validation)
            foreach (var line in ProgressLines.Validation(r.Iteration, validation)) log(line);
    }

    /// <summary>The time the iterations left should take at the median pace of the last ten (the first, with its allocator
    /// growth and kernel selection, counts only while it is alone).</summary>
    private TimeSpan Remaining(long iteration)
    {
        var recent = rows.TakeLast(10).Skip(rows.Count > 1 && rows.Count <= 10 ? 1 : 0).Select(x => x.ElapsedMs).Order().ToArray();
        return TimeSpan.FromMilliseconds(recent[recent.Length / 2] * Math.Max(0, run.Settings.TrainIters - iteration));
    }

    /// <summary>Once the run ended: summary.json (with every rank's peak memory, null for a single device, why it stopped
    /// early, if it did, and every rank's offload totals) and the plots, offload.csv when <paramref name="offloaded"/> holds
    /// every rank's offload records, and says what it wrote.</summary>
    public void Finish(IReadOnlyList<long>? peakPerRank, StopReason stoppedBy, IReadOnlyList<IReadOnlyList<OffloadRecord>>? offloaded)
    {
        if (rows.Count == 0) return;
        if (offloaded is not null) OffloadCsv.Write(OffloadCsvPath, run.Description, offloaded);
        else File.Delete(OffloadCsvPath);
        Write(peakPerRank, stoppedBy, offloaded?.Select(OffloadTotals.Of).ToList());
        log(ProgressLines.Wrote(output, run, offloaded is not null));
    }

    /// <summary>When a step failed: summary.json and the plots of the iterations recorded before it (the other ranks' peaks are
    /// unknown then: they may be gone).</summary>
    public void KeepOnFailure()
    {
        if (rows.Count == 0) return;
        File.Delete(OffloadCsvPath);
        Write(peakPerRank: null, StopReason.None, offloadPerRank: null);
    }

    /// <summary>Where offload.csv goes; one an earlier run left in this --out (--overwrite) is not this run's, so a run that
    /// writes none deletes it.</summary>
    private string OffloadCsvPath => Path.Combine(output, OffloadCsv.FileName);

    /// <summary>Summary and plots over the whole run: the rows kept from before the resume and this process's.</summary>
    private void Write(IReadOnlyList<long>? peakPerRank, StopReason stoppedBy, IReadOnlyList<OffloadTotals>? offloadPerRank)
    {
        var all = earlier.Concat(rows).ToList();
        RunSummary.From(run, all, peakPerRank, stoppedBy, offloadPerRank).Write(Path.Combine(output, "summary.json"));
        Plots.Write(output, all, $"{run.Model.Name} on {run.Devices()}");
    }

    public void Dispose()
    {
        csv?.Dispose();
        tensorBoard?.Dispose();
    }
}
