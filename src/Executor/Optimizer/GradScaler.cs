using System.Text.Json.Serialization;
using Harness.Simulator.Specs;

namespace Harness.Executor.Optimizer;

/// <summary>
/// Megatron's loss scaler (megatron/core/optimizer/grad_scaler.py, ConstantGradScaler and DynamicGradScaler, at
/// NVIDIA/Megatron-LM d98e8a6; Micikevicius et al. 2018, "Mixed Precision Training", section 3.2): the loss is multiplied
/// by <see cref="Scale"/> before backward, so that small fp16 gradients do not flush to zero; the main gradients are
/// multiplied by <see cref="InverseScale"/> before the step (<see cref="MainGradUnscale"/>), and a step whose gradients
/// hold an inf or a NaN on any rank is skipped, then reported to <see cref="Update"/>. A constant scale (--loss-scale)
/// never changes. A dynamic one: an overflow zeroes the growth count and takes one from the hysteresis count; once that
/// count is spent, this and every further overflow halve the scale (never below --min-loss-scale), until
/// --loss-scale-window overflow-free iterations in a row double it and restore the hysteresis count. Immutable: an
/// update returns the next state, which is what a checkpoint keeps.
/// </summary>
/// <param name="Scale">A float32 value, as Megatron keeps the scale (a float tensor): halving and doubling stay exact.</param>
/// <param name="GrowthTracker">Overflow-free iterations since the last overflow or growth.</param>
/// <param name="HysteresisTracker">Overflows left before the scale halves; at or below 0, every overflow halves it.</param>
public sealed record GradScaler(LossScaleSettings Settings, double Scale, int GrowthTracker, int HysteresisTracker)
{
    /// <summary>Megatron's get_megatron_optimizer (megatron/core/optimizer/__init__.py) passes growth 2 and backoff 0.5.</summary>
    public const double GrowthFactor = 2, BackoffFactor = 0.5;

    /// <summary>Whether the scale follows overflows (no --loss-scale).</summary>
    [JsonIgnore]
    public bool Dynamic => Settings.Constant is null;

    /// <summary>
    /// The scaler a run starts with, by Megatron's rule (get_megatron_optimizer): under fp16, bf16 or the distributed
    /// optimizer, a constant one when --loss-scale is given; else, under fp16, a dynamic one from --initial-loss-scale;
    /// none otherwise (fp32 without the distributed optimizer, bf16 without --loss-scale: gradients are not scaled, and no
    /// step is checked or skipped).
    /// </summary>
    public static GradScaler? For(RunDescription description, LossScaleSettings settings) =>
        settings.Constant is double constant && (description.Precision != Precision.Fp32 || description.DistributedOptimizer)
            ? new GradScaler(settings, Float(constant), 0, settings.Hysteresis)
            : description.Precision == Precision.Fp16 ? new GradScaler(settings, Float(settings.Initial), 0, settings.Hysteresis) : null;

    /// <summary>1/scale as Megatron forms it: in double precision, then rounded to float32.</summary>
    [JsonIgnore]
    public double InverseScale => Float(1 / Scale);

    /// <summary>The state after an iteration whose gradients did (<paramref name="foundInf"/>) or did not overflow.</summary>
    public GradScaler Update(bool foundInf)
    {
        if (!Dynamic) return this;
        if (foundInf)
        {
            int hysteresis = HysteresisTracker - 1;
            double scale = hysteresis <= 0 ? Math.Max(Float(Scale * BackoffFactor), Float(Settings.Min)) : Scale;
            return this with { Scale = scale, GrowthTracker = 0, HysteresisTracker = hysteresis };
        }
        int growth = GrowthTracker + 1;
        return growth == Settings.Window
            ? this with { Scale = Float(Scale * GrowthFactor), GrowthTracker = 0, HysteresisTracker = Settings.Hysteresis }
            : this with { GrowthTracker = growth };
    }

    /// <summary>This scaler with the scale and trackers of <paramref name="saved"/> (a checkpoint's), as Megatron's
    /// load_state_dict restores them; the settings stay this run's.</summary>
    public GradScaler Restore(GradScaler saved) =>
        Dynamic ? this with { Scale = saved.Scale, GrowthTracker = saved.GrowthTracker, HysteresisTracker = saved.HysteresisTracker } : this;

    private static double Float(double x) => (float)x;
}
