namespace Harness.Executor.Training.Records;

/// <summary>
/// Why a run stops before --train-iters, ordered so that ranks agree by a maximum (a signal outranks the time limit, which
/// outranks the iteration limit) and so that the one stop reported is the most urgent.
/// </summary>
public enum StopReason
{
    None = 0,
    /// <summary>Megatron's --exit-interval: the iterations done are a multiple of it.</summary>
    ExitInterval = 1,
    /// <summary>Megatron's --exit-duration-in-mins: more minutes than it have passed since the run started.</summary>
    ExitDuration = 2,
    /// <summary>SIGINT (Ctrl-C).</summary>
    Interrupt = 3,
    /// <summary>SIGTERM (what Slurm, `timeout` and `kill` send).</summary>
    Terminate = 4,
}
