using Harness.Simulator.Specs;

namespace Harness.Executor.Optimizer;

/// <summary>
/// Megatron's learning-rate schedule (megatron/core/optimizer_param_scheduler.py, OptimizerParamScheduler.get_lr, with the
/// iteration-based arguments of megatron/training/training.py, get_optimizer_param_scheduler). Megatron counts steps in
/// samples: iteration i (0-based: i iterations done) is at step i x global batch, the decay ends at --lr-decay-iters
/// (default --train-iters) x global batch, and the warm-up ends at --lr-warmup-iters x global batch, or at
/// --lr-warmup-fraction x the decay steps. Then:
///   warm-up (steps ≤ warm-up steps): lr · steps / warm-up steps, linear from --lr-warmup-init (0);
///   constant: lr;   past the decay steps: min-lr;
///   inverse-square-root: max(min-lr, lr · √max(warm-up steps, 1) / √max(steps, 1));
///   linear: min-lr + (lr − min-lr)(1 − r);   cosine: min-lr + (lr − min-lr)·½(1 + cos πr),
///   with r = (steps − warm-up steps) / (decay steps − warm-up steps).
/// Counting in samples matters only for inverse-square-root without warm-up, whose one-sample warm-up Megatron keeps.
/// Pure: the rate depends on the iteration alone, so a resumed run continues the schedule where it stopped.
/// </summary>
public sealed class LearningRateSchedule
{
    private readonly LearningRateSettings settings;
    private readonly double warmupSteps, decaySteps;
    private readonly int globalBatch;

    public LearningRateSchedule(LearningRateSettings settings, long trainIters, int globalBatch)
    {
        this.settings = settings;
        this.globalBatch = globalBatch;
        decaySteps = (double)(settings.DecayIters ?? trainIters) * globalBatch;
        warmupSteps = settings.WarmupFraction is double f ? f * decaySteps : (double)settings.WarmupIters * globalBatch;
    }

    /// <summary>The rate of iteration <paramref name="iteration"/> (0-based: the iterations done before it). Megatron steps its
    /// scheduler only after an update, so a run whose loss scaler skipped steps passes the iterations that updated.</summary>
    public double At(long iteration)
    {
        double steps = (double)iteration * globalBatch, max = settings.Lr, min = settings.MinLr;
        if (warmupSteps > 0 && steps <= warmupSteps) return max * steps / warmupSteps;
        if (settings.DecayStyle == LearningRateDecayStyle.Constant) return max;
        if (steps > decaySteps) return min;
        if (settings.DecayStyle == LearningRateDecayStyle.InverseSquareRoot)
            return Math.Max(min, max * Math.Sqrt(Math.Max(warmupSteps, 1)) / Math.Sqrt(Math.Max(steps, 1)));
        double r = (steps - warmupSteps) / (decaySteps - warmupSteps);
        double coefficient = settings.DecayStyle == LearningRateDecayStyle.Linear ? 1 - r : 0.5 * (Math.Cos(Math.PI * r) + 1);
        return min + coefficient * (max - min);
    }

}
