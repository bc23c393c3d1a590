using System.Runtime.InteropServices;
using Harness.Executor.Training;
using Harness.Executor.Training.Records;

namespace Harness.Cli.Commands;

/// <summary>
/// SIGINT (Ctrl-C) and SIGTERM (Slurm's, `timeout`'s, `kill`'s) while `harness run` trains, handled as Megatron's
/// --exit-signal-handler handles them (megatron/training/dist_signal_handler.py and checkpoint_and_decide_exit in
/// megatron/training/training.py, NVIDIA/Megatron-LM d98e8a6): the first one is recorded and the run finishes its
/// iteration, saves a checkpoint where --save is set, writes its records, and exits with the shell's code for the signal
/// (<see cref="ExitCode"/>). A second signal of the same kind is let through: the process ends at once.
/// </summary>
public sealed class StopSignals : IDisposable
{
    private readonly RunStop stop;
    private readonly PosixSignalRegistration interrupt, terminate;

    public StopSignals(RunStop stop)
    {
        this.stop = stop;
        interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => Handle(c, StopReason.Interrupt));
        terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => Handle(c, StopReason.Terminate));
    }

    private void Handle(PosixSignalContext context, StopReason reason)
    {
        context.Cancel = stop.Requested != reason;
        stop.Request(reason);
    }

    /// <summary>What `harness run` exits with after stopping for <paramref name="reason"/>: 128 + the signal's number for a
    /// signal (130 for SIGINT, 143 for SIGTERM, as a shell reports a process the signal ended, so schedulers and scripts
    /// see the run did not finish); 0 for Megatron's --exit-interval and --exit-duration-in-mins, which end a run as asked
    /// (Megatron's sys.exit(0)).</summary>
    public static int ExitCode(StopReason reason) => reason switch
    {
        StopReason.Interrupt => 128 + 2,
        StopReason.Terminate => 128 + 15,
        _ => 0,
    };

    public void Dispose()
    {
        interrupt.Dispose();
        terminate.Dispose();
    }
}
