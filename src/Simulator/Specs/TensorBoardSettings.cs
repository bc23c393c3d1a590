namespace Harness.Simulator.Specs;

/// <summary>
/// Megatron-LM's TensorBoard flags (megatron/training/arguments.py, NVIDIA/Megatron-LM d98e8a6): --tensorboard-dir (none: no
/// event file), --tensorboard-log-interval (1: every iteration's scalars), --log-timers-to-tensorboard (the iteration's time,
/// throughput and the executor's per-iteration times), --log-memory-to-tensorboard, --log-validation-ppl-to-tensorboard,
/// --log-world-size-to-tensorboard, and the loss scale (on; --no-log-loss-scale-to-tensorboard turns it off).
/// </summary>
public sealed record TensorBoardSettings(
    string? Dir = null,
    int LogInterval = 1,
    bool LogTimers = false,
    bool LogMemory = false,
    bool LogValidationPpl = false,
    bool LogLossScale = true,
    bool LogWorldSize = false)
{
    /// <summary>Whether iteration <paramref name="iteration"/>'s scalars are written (Megatron's training_log:
    /// iteration % tensorboard_log_interval == 0).</summary>
    public bool Due(long iteration) => Dir is not null && iteration % LogInterval == 0;
}
