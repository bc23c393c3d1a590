using Harness.Executor.Training;
using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;

namespace Harness.Cli.Output;

/// <summary>
/// Where `harness run` writes, checked before any work: `--out`, `--save` and `--tensorboard-dir` must be writable folders, and a new run must
/// not replace an earlier one's records or checkpoints by accident. An `--out` that holds a run's metrics.csv takes a run
/// that continues it (`--load`) or `--overwrite`; a `--save` that holds checkpoints takes `--load` of that same folder (the
/// run continues them) or `--overwrite` (the new run's checkpoints are written beside them and the tracker names the
/// newest, as Megatron's --save does).
/// </summary>
public static class RunOutputs
{
    /// <summary>Every reason the run's outputs cannot be used, as sentences naming the flag; creates the folders.</summary>
    public static IEnumerable<string> Check(RunSettings s)
    {
        string output = s.Out!;
        // A run from a Hugging Face folder starts at iteration 0: it continues no run's records.
        if (MetricsCsv.HoldsRows(Path.Combine(output, "metrics.csv")) && (s.Load is null || s.LoadFormat == LoadFormat.Hf) && !s.Overwrite)
            yield return $"--out '{output}' already holds a run's metrics.csv; pass another --out, --load its checkpoint to continue it, or --overwrite to replace it.";
        else if (OutputFolder.Create(output) is string outError) yield return outError;
        if (s.TensorBoardOrDefault.Dir is string events && OutputFolder.Create(events, "--tensorboard-dir") is string eventsError) yield return eventsError;
        if (s.Save is not string save) yield break;
        if (Checkpoint.Holds(save) && !s.Overwrite && !(s.Load is string load && SameFolder(load, save)))
            yield return $"--save '{save}' already holds checkpoints; pass --load {save} to continue from them, another --save, or --overwrite to save beside them.";
        else if (!File.Exists(save) && OutputFolder.Create(save, "--save") is string saveError) yield return saveError;
    }

    private static bool SameFolder(string a, string b) =>
        Path.GetFullPath(a).TrimEnd(Path.DirectorySeparatorChar) == Path.GetFullPath(b).TrimEnd(Path.DirectorySeparatorChar);
}
