using Harness.Executor.Data;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training.Records;

/// <summary>
/// summary.json: what ran (<see cref="RunRecord"/>: the model, the run description as run, the settings, the notes, the
/// device and runtime), each once, and its steady-state figures: medians over the iterations after warm-up (the first
/// <see cref="WarmupIterations"/> are left out: allocator growth and kernel selection), so they compare directly with a
/// simulator estimate of the same description (`harness validate`). For a parallel run, tokens per second are per GPU of
/// its world and <see cref="PeakMemoryBytesPerRank"/> holds every rank's peak (<see cref="PeakMemoryBytes"/> is their maximum).
/// <see cref="SkippedIterations"/> counts the iterations whose optimizer step was skipped on an overflow (those before a
/// resume too); <see cref="FinalLossScale"/> is the loss scaler's last scale, null when the run scales no loss;
/// <see cref="FinalValidationLoss"/> the last validation loss (after the last iteration), null when the run computes none;
/// <see cref="StoppedBy"/> says why a run ended before --train-iters (a signal, --exit-duration-in-mins, --exit-interval).
/// <see cref="PeakAllocatedBytes"/> is the CUDA caching allocator's peak allocated bytes over the run, the maximum over ranks
/// (torch.cuda.max_memory_allocated, what Megatron reports and the simulator predicts); null on CPU or where it cannot be read.
/// <see cref="Data"/> names the datasets each share blended, with their normalized weights and samples.
/// <see cref="OffloadPerRank"/> sums each rank's activation-offload bookkeeping of the last step (its records are in
/// offload.csv: <see cref="OffloadCsv"/>); null when the run offloads nothing.
/// </summary>
public sealed record RunSummary(
    ModelSpec Model,
    RunDescription Description,
    RunSettings Settings,
    IReadOnlyList<string> Notes,
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
    IReadOnlyList<long>? PeakMemoryBytesPerRank = null,
    double? MedianCommunicationMs = null,
    long SkippedIterations = 0,
    double? FinalLossScale = null,
    double? FinalValidationLoss = null,
    StopReason StoppedBy = StopReason.None,
    long? PeakAllocatedBytes = null,
    IReadOnlyList<BlendedSplit>? Data = null,
    IReadOnlyList<OffloadTotals>? OffloadPerRank = null)
{
    public static RunSummary From(RunRecord run, IReadOnlyList<IterationRecord> records, IReadOnlyList<long>? peakPerRank = null, StopReason stoppedBy = StopReason.None,
        IReadOnlyList<OffloadTotals>? offloadPerRank = null)
    {
        int warmup = Math.Min(records.Count - 1, Math.Max(1, records.Count / 10));
        var steady = records.Skip(warmup).ToList();
        double Median(Func<IterationRecord, double> f)
        {
            var v = steady.Select(f).OrderBy(x => x).ToArray();
            return v.Length == 0 ? double.NaN : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        }
        var d = run.Description;
        double stepMs = Median(r => r.ElapsedMs);
        double tokens = d.GlobalBatch * (double)run.Model.SeqLength / (stepMs / 1e3) / d.WorldSize;
        double? mfu = records.Count > 0 && records[0].Mfu is not null ? Median(r => r.Mfu!.Value) : null;
        return new RunSummary(run.Model, d, run.Settings, run.Notes, run.Device, run.Runtime, run.Parameters, records.Count, warmup,
            stepMs, tokens, Median(r => r.ModelTflopsPerGpu), mfu, records.Count == 0 ? 0 : records.Max(r => r.MemoryPeakBytes),
            run.Settings.Device == ExecutionDevice.Cuda ? "NVML device memory used (CUDA context + caching allocator reserve)" : "process working set",
            Median(r => r.HostGapMs), Median(r => r.EnqueueMs), records.Count == 0 ? double.NaN : records[^1].Loss,
            peakPerRank, records.Any(r => r.CommunicationMs is not null) ? Median(r => r.CommunicationMs ?? 0) : null,
            records.Count == 0 ? 0 : records[^1].SkippedIterations, records.Count == 0 ? null : records[^1].LossScale,
            records.LastOrDefault(r => r.ValidationLoss is not null)?.ValidationLoss, stoppedBy,
            records.Any(r => r.AllocatedPeakBytes is not null) ? records.Max(r => r.AllocatedPeakBytes ?? 0) : null, run.Data, offloadPerRank);
    }

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json));

    /// <summary>Each record as it is made: the properties its constructor sets, not those computed from them
    /// (RunDescription's RecomputeOrNone, ModelSpec's HeadDim and the like would be second copies).</summary>
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
        TypeInfoResolver = new DefaultJsonTypeInfoResolver
        {
            Modifiers =
            {
                info =>
                {
                    if (info.Kind != JsonTypeInfoKind.Object) return;
                    foreach (var computed in info.Properties.Where(p => p.Set is null).ToList()) info.Properties.Remove(computed);
                },
            },
        },
    };
}
