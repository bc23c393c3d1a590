using System.Text.Json;
using System.Text.Json.Serialization;
using Harness.Executor.Training;

namespace Harness.Executor.Records;

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
    double FinalLoss)
{
    public static RunSummary From(Trainer trainer, IReadOnlyList<IterationRecord> records)
    {
        var o = trainer.Options;
        int warmup = Math.Min(records.Count - 1, Math.Max(1, records.Count / 10));
        var steady = records.Skip(warmup).ToList();
        double Median(Func<IterationRecord, double> f)
        {
            var v = steady.Select(f).OrderBy(x => x).ToArray();
            return v.Length == 0 ? double.NaN : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        }
        double stepMs = Median(r => r.ElapsedMs);
        double tokens = o.GlobalBatchSize * (double)o.Model.SeqLength / (stepMs / 1e3);
        double tflops = Median(r => r.ModelTflopsPerGpu);
        double? mfu = records.Count > 0 && records[0].Mfu is not null ? Median(r => r.Mfu!.Value) : null;
        return new RunSummary(o, trainer.DeviceName, trainer.Runtime, trainer.ParameterCount, records.Count, warmup, stepMs, tokens, tflops, mfu,
            records.Count == 0 ? 0 : records.Max(r => r.MemoryPeakBytes),
            o.Device == Native.ExecutionDevice.Cuda ? "NVML device memory used (CUDA context + caching allocator reserve)" : "process working set",
            Median(r => r.HostGapMs), Median(r => r.EnqueueMs), records.Count == 0 ? double.NaN : records[^1].Loss);
    }

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json));

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
    };
}
