using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Executor.Calibration;

/// <summary>
/// What `harness calibrate` measured on one GPU, and the <see cref="EfficiencySpec"/> it implies: the constants with
/// which the simulator's own cost model (<see cref="ComputeTime"/>) gives the measured time of each kernel family.
/// GEMM: the rate that reproduces the total time of all the GEMMs timed, with the simulator's shape curve applied per
/// shape (Σ flops/(peak·shape) over Σ seconds). Attention: the same for causal attention forward and backward, per backend
/// (flash: <see cref="EfficiencySpec.Attention"/>, cuDNN's fused attention: <see cref="EfficiencySpec.FusedAttention"/>; a
/// backend not measured keeps the preset's), counted as the simulator counts it (the causal forward's FLOPs times
/// 1 + <see cref="ComputeTime.FlashBackwardRatio"/>; cuDNN's at the GPU's rate for its sequence length, its constant stated at
/// <see cref="ComputeTime.AttentionReferenceKeys"/> keys, <see cref="ComputeTime.KeyLengthFactor"/>). The unfused kernels have no constant of their own (their matmuls and
/// softmax are the GEMM and HBM rates); they are timed for the report only.
/// HBM: bytes moved by a streaming add over the datasheet bandwidth. Host link: pinned copies to and from the device.
/// </summary>
public sealed record GpuCalibration(
    GpuSpec Preset,
    string DeviceName,
    double ColdGemmFlopsPerSecond,
    double HeldGemmFlopsPerSecond,
    IReadOnlyList<GemmRate> Gemms,
    IReadOnlyList<AttentionRate> Attention,
    MemoryRate Memory,
    MemoryRate? HostToDevice = null,
    MemoryRate? DeviceToHost = null)
{
    private double Peak => Preset.PeakBf16Flops;

    /// <summary>The efficiency that makes the simulator's GEMM model give exactly this GEMM's measured time.</summary>
    public double GemmEfficiency(GemmRate r) => AtFullEfficiency(r) / r.Seconds;

    /// <summary>The efficiency that makes the simulator's attention model give this measurement's forward plus backward time.</summary>
    public double AttentionEfficiency(AttentionRate a) => AtFullEfficiency(a) / (a.ForwardSeconds + a.BackwardSeconds);

    public EfficiencySpec Measured => Preset.Efficiency with
    {
        Gemm = Math.Min(1, Gemms.Sum(AtFullEfficiency) / Gemms.Sum(r => r.Seconds)),
        Attention = AttentionEfficiency(AttentionBackend.Flash) ?? Preset.Efficiency.Attention,
        FusedAttention = AttentionEfficiency(AttentionBackend.Fused) ?? Preset.Efficiency.FusedAttention,
        Hbm = Math.Min(1, Memory.BytesPerSecond / Preset.HbmBandwidthBytesPerSecond),
    };

    /// <summary>The efficiency that gives the total measured time of <paramref name="backend"/>'s attentions; null when none
    /// was measured (the GPU has no such kernel).</summary>
    public double? AttentionEfficiency(AttentionBackend backend)
    {
        var rates = Attention.Where(a => a.Backend == backend).ToList();
        return rates.Count == 0 ? null : Math.Min(1, rates.Sum(AtFullEfficiency) / rates.Sum(a => a.ForwardSeconds + a.BackwardSeconds));
    }

    /// <summary>Seconds the simulator charges this GEMM at efficiency 1 (its shape curve applied).</summary>
    private double AtFullEfficiency(GemmRate r) => r.Shape.Flops / (Peak * ComputeTime.ShapeFactor(r.Shape, Preset.Efficiency));

    /// <summary>Seconds the simulator charges this attention, forward and backward, at efficiency 1.</summary>
    private double AtFullEfficiency(AttentionRate a) => (1 + ComputeTime.FlashBackwardRatio) * a.CausalForwardFlops
        / (Peak * ComputeTime.KeyLengthFactor(a.Backend, a.Shape.SeqLength, Preset.Efficiency));

    /// <summary>The host link offload streams over: the slower direction of the pinned copies (offload and reload each
    /// move a chunk's activations one way), or the preset's when not measured.</summary>
    public double HostLinkBytesPerSecond =>
        HostToDevice is { } up && DeviceToHost is { } down ? Math.Min(up.BytesPerSecond, down.BytesPerSecond) : Preset.HostLinkBytesPerSecond;

    /// <summary>The preset with the measured efficiencies and host link: a GPU the simulator, the search and validate can
    /// take as a cluster file.</summary>
    public GpuSpec Calibrated => Preset with { Efficiency = Measured, HostLinkBytesPerSecond = HostLinkBytesPerSecond };
}
