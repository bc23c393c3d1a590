namespace Harness.Executor.Optimizer;

/// <summary>
/// Megatron's OptimizerParamScheduler with --lr-decay-style cosine: linear warm-up from 0 to the peak over
/// <see cref="WarmupIters"/>, then lr = min + (peak − min)·½(1 + cos(π·t)) for t = (i − warmup)/(decay − warmup),
/// and <see cref="MinLr"/> after <see cref="DecayIters"/>. Pure: the rate depends on the iteration alone.
/// </summary>
public sealed record LearningRateSchedule(double Lr, double MinLr, long WarmupIters, long DecayIters)
{
    /// <summary>The rate for iteration i (0-based: the i-th optimizer step).</summary>
    public double At(long i)
    {
        if (WarmupIters > 0 && i < WarmupIters) return Lr * (i + 1) / WarmupIters;
        if (i >= DecayIters) return MinLr;
        double t = (double)(i - WarmupIters) / Math.Max(1, DecayIters - WarmupIters);
        return MinLr + (Lr - MinLr) * 0.5 * (1 + Math.Cos(Math.PI * t));
    }
}
