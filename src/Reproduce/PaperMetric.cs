using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>The quantity a published table reports and a reproduction compares.</summary>
public enum PaperMetric
{
    /// <summary>Training throughput, tokens per second per GPU (MFU follows from it by the paper's FLOP counter).</summary>
    TokensPerSecondPerGpu,
    /// <summary>Training throughput of the whole job, tokens per second (tables that compare different GPU counts).</summary>
    TokensPerSecond,
    /// <summary>Achieved TFLOP/s per GPU as the paper counts FLOPs.</summary>
    TflopsPerGpu,
    /// <summary>Peak allocated memory per GPU, maximum over ranks, bytes.</summary>
    PeakMemoryBytes,
}

public static class PaperMetrics
{
    private static readonly Dictionary<string, PaperMetric> Names = new()
    {
        ["tokens_per_s_per_gpu"] = PaperMetric.TokensPerSecondPerGpu,
        ["tokens_per_s"] = PaperMetric.TokensPerSecond,
        ["tflops_per_gpu"] = PaperMetric.TflopsPerGpu,
        ["peak_memory_bytes"] = PaperMetric.PeakMemoryBytes,
    };

    /// <summary>The metric named in an experiment file.</summary>
    public static PaperMetric Parse(string name) =>
        Names.TryGetValue(name, out var m)
            ? m
            : throw new ExperimentException($"metric '{name}' is not one of {string.Join(", ", Names.Keys)}.");

    /// <summary>Throughput metrics share the throughput target; memory has its own.</summary>
    public static bool IsThroughput(this PaperMetric m) => m != PaperMetric.PeakMemoryBytes;

    /// <summary>Units for tables and axis labels.</summary>
    public static string Unit(this PaperMetric m) => m switch
    {
        PaperMetric.TokensPerSecondPerGpu => "tokens/s/GPU",
        PaperMetric.TokensPerSecond => "tokens/s",
        PaperMetric.TflopsPerGpu => "TFLOP/s/GPU",
        _ => "GB",
    };

    /// <summary>The published value of the metric, or null where the row has none (an OOM row).</summary>
    public static double? Published(this PaperMetric m, PublishedValues p) => m switch
    {
        PaperMetric.TokensPerSecondPerGpu => p.TokensPerSecondPerGpu,
        PaperMetric.TokensPerSecond => p.TokensPerSecond,
        PaperMetric.TflopsPerGpu => p.TflopsPerGpu,
        _ => p.PeakMemoryBytes,
    };
}

/// <summary>
/// A paper's FLOP-counting convention, applied to the simulated throughput. The simulator predicts time; the
/// TFLOP/s and MFU a paper prints depend on how it counts FLOPs (Narayanan et al.: full s×s attention with the
/// recomputed forward; Megatron-Kwai: causal attention, recomputation not counted), so a reproduction counts
/// as the paper did, with the project's one FLOP counter.
/// </summary>
public sealed record PaperFlopCounter(AttentionFlopCounting Attention, bool RecomputeCounted, double PeakFlops)
{
    /// <summary>The counter an experiment declares, for a row on <paramref name="gpu"/>.</summary>
    public static PaperFlopCounter For(Experiment e, GpuSpec gpu)
    {
        var c = e.FlopCounting;
        if (c is null) return new(AttentionFlopCounting.Causal, false, gpu.PeakBf16Flops);
        var attention = c.Attention switch
        {
            "full" => AttentionFlopCounting.Full,
            "causal" => AttentionFlopCounting.Causal,
            _ => throw new ExperimentException($"{e.Name}: flop_counting.attention '{c.Attention}' is not 'full' or 'causal'."),
        };
        double peakTflops = c.PeakTflopsByGpu is { } byGpu && byGpu.TryGetValue(gpu.Name, out var p) ? p
            : c.PeakTflops ?? gpu.PeakBf16Flops / 1e12;
        return new(attention, c.RecomputeCounted, peakTflops * 1e12);
    }

    /// <summary>FLOPs per token as the paper counts them for this model and configuration.</summary>
    public double FlopsPerToken(ModelSpec model, RunDescription config) => RecomputeCounted
        ? Flops.HardwareFlopsPerToken(model, config, Attention)
        : Flops.ModelFlopsPerToken(model, Attention);

    /// <summary>TFLOP/s per GPU at the given throughput.</summary>
    public double TflopsPerGpu(ModelSpec model, RunDescription config, double tokensPerSecondPerGpu) =>
        tokensPerSecondPerGpu * FlopsPerToken(model, config) / 1e12;

    /// <summary>Fraction of the paper's peak at the given throughput (MFU when recomputation is not counted).</summary>
    public double FractionOfPeak(ModelSpec model, RunDescription config, double tokensPerSecondPerGpu) =>
        tokensPerSecondPerGpu * FlopsPerToken(model, config) / PeakFlops;
}
