using System.Text.Json;
using System.Text.Json.Serialization;
using Harness.Executor.Training;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training.Records;

/// <summary>
/// summary.json: the run's configuration, device, and its steady-state figures: medians over the iterations after
/// warm-up (the first <see cref="WarmupIterations"/> are left out: allocator growth and kernel selection), so they
/// compare directly with a simulator prediction of the same configuration.
/// </summary>
public sealed record RunSummary(
    TrainingOptions Config,
    string Device,
    string Runtime,
    long Parameters,
    long Iterations,
    int WarmupIterations,
    double MedianStepMs,
    double TokensPerSecondPerGpu,
    double ModelTflopsPerGpu,
    double? Mfu,
    long PeakMemoryBytes,
    string MemoryMeasure,
    double MedianHostGapMs,
    double MedianEnqueueMs,
    double FinalLoss,
    RunDescription? Parallel = null,
    IReadOnlyList<long>? PeakMemoryBytesPerRank = null,
    double? MedianCommunicationMs = null)
{
    public static RunSummary From(Trainer trainer, IReadOnlyList<IterationRecord> records) =>
        From(trainer.Options, trainer.DeviceName, trainer.Runtime, trainer.ParameterCount, records);

    /// <summary>
    /// The summary of any run; for a parallel run, <paramref name="parallel"/> (tokens per second are then per GPU
    /// of its world) and every rank's peak memory (PeakMemoryBytes is their maximum).
    /// </summary>
    public static RunSummary From(TrainingOptions o, string device, string runtime, long parameters, IReadOnlyList<IterationRecord> records,
        RunDescription? parallel = null, IReadOnlyList<long>? peakPerRank = null)
    {
        int warmup = Math.Min(records.Count - 1, Math.Max(1, records.Count / 10));
        var steady = records.Skip(warmup).ToList();
        double Median(Func<IterationRecord, double> f)
        {
            var v = steady.Select(f).OrderBy(x => x).ToArray();
            return v.Length == 0 ? double.NaN : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        }
        double stepMs = Median(r => r.ElapsedMs);
        double tokens = o.GlobalBatchSize * (double)o.Model.SeqLength / (stepMs / 1e3) / (parallel?.WorldSize ?? 1);
        double tflops = Median(r => r.ModelTflopsPerGpu);
        double? mfu = records.Count > 0 && records[0].Mfu is not null ? Median(r => r.Mfu!.Value) : null;
        return new RunSummary(o, device, runtime, parameters, records.Count, warmup, stepMs, tokens, tflops, mfu,
            records.Count == 0 ? 0 : records.Max(r => r.MemoryPeakBytes),
            o.Device == ExecutionDevice.Cuda ? "NVML device memory used (CUDA context + caching allocator reserve)" : "process working set",
            Median(r => r.HostGapMs), Median(r => r.EnqueueMs), records.Count == 0 ? double.NaN : records[^1].Loss,
            parallel, peakPerRank, records.Any(r => r.CommunicationMs is not null) ? Median(r => r.CommunicationMs ?? 0) : null);
    }

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json));

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
    };
}
