using System.Diagnostics;
using System.Runtime.InteropServices;
using Harness.Executor.Native;

namespace Harness.Executor.Distributed.Launch;

/// <summary>
/// `harness run --nproc-per-node N` on one node: starts N copies of a command with torchrun's variables
/// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), one per GPU, forwards their
/// output line by line (rank 0's standard output as is, everything else prefixed "[rank r]"), and waits.
/// When a rank fails, the others get a grace period (their NCCL watchdogs abort) and are then killed, so the
/// job ends with every rank's errors shown and the first failure's exit code. A SIGTERM to the launcher (Slurm's,
/// `timeout`'s) goes on to every rank, and SIGINT (Ctrl-C, which the terminal sends to the ranks as well) leaves the launcher
/// waiting: the ranks stop together after the same iteration, save, and exit with the signal's code (128 + its number),
/// which the launcher returns as theirs, not as a failure.
/// </summary>
public static class WorkerLauncher
{
    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    private const int SigTerm = 15;

    /// <summary>A rank's exit code after it stopped on SIGINT or SIGTERM.</summary>
    private static bool StoppedBySignal(int code) => code is 128 + 2 or 128 + SigTerm;

    /// <summary>Why <paramref name="processes"/> ranks, one per GPU, cannot start on this node, or null: more ranks than the
    /// GPUs the driver counts (CUDA_VISIBLE_DEVICES may leave fewer, which the ranks themselves report), or no driver at all;
    /// checked before any starts, so that a mistyped count does not start processes by the thousand.</summary>
    public static string? Refusal(int processes) => Nvml.DeviceCount switch
    {
        null => $"--nproc-per-node {processes} starts one process per GPU, and this machine has no NVIDIA driver (libnvidia-ml.so.1).",
        int gpus when processes > gpus => $"--nproc-per-node {processes} starts one process per GPU, and this node has {gpus}.",
        _ => null,
    };

    public static int Run(int processes, string fileName, IReadOnlyList<string> arguments, int masterPort,
        TextWriter stdout, TextWriter stderr, TimeSpan? grace = null)
    {
        if (processes < 1) throw new ArgumentOutOfRangeException(nameof(processes), processes, "at least one process.");
        var gate = new object();
        var children = new List<Process>();
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => c.Cancel = true);
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            lock (gate)
                foreach (var p in children.Where(p => !p.HasExited)) Kill(p.Id, SigTerm);
        });
        try
        {
            for (int rank = 0; rank < processes; rank++)
            {
                var psi = new ProcessStartInfo(fileName)
                {
                    RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
                };
                foreach (var a in arguments) psi.ArgumentList.Add(a);
                psi.Environment["RANK"] = psi.Environment["LOCAL_RANK"] = rank.ToString();
                psi.Environment["WORLD_SIZE"] = psi.Environment["LOCAL_WORLD_SIZE"] = processes.ToString();
                psi.Environment["MASTER_ADDR"] = "127.0.0.1";
                psi.Environment["MASTER_PORT"] = masterPort.ToString();
                var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
                int r = rank;
                p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (gate) stdout.WriteLine(r == 0 ? e.Data : $"[rank {r}] {e.Data}"); };
                p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (gate) stderr.WriteLine($"[rank {r}] {e.Data}"); };
                p.Start();
                p.BeginOutputReadLine();
                p.BeginErrorReadLine();
                lock (gate) children.Add(p);
            }
            return Supervise(children, grace ?? TimeSpan.FromSeconds(30), stderr, gate);
        }
        finally
        {
            foreach (var p in children)
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
                p.WaitForExit();
                p.Dispose();
            }
        }
    }

    private static int Supervise(List<Process> children, TimeSpan grace, TextWriter stderr, object gate)
    {
        var exits = children.Select(p => p.WaitForExitAsync()).ToList();
        var pending = new List<Task>(exits);
        while (pending.Count > 0)
        {
            var done = Task.WhenAny(pending).GetAwaiter().GetResult();
            pending.Remove(done);
            int rank = exits.IndexOf((Task)done);
            int code = children[rank].ExitCode;
            if (code == 0) continue;
            if (StoppedBySignal(code))
            {
                // Every rank stops after the same iteration; the first to exit is no failure.
                foreach (var p in children) p.WaitForExit();
                return code;
            }
            // First failure: let the others notice (their watchdogs abort) and then stop them.
            Task.WhenAll(pending).Wait(grace);
            foreach (var p in children.Where(p => !p.HasExited)) p.Kill(entireProcessTree: true);
            foreach (var p in children) p.WaitForExit(); // drains the redirected output too
            lock (gate)
                stderr.WriteLine($"harness: rank {rank} exited with code {code}; the other ranks were stopped. Its errors are above, prefixed [rank {rank}].");
            return code;
        }
        foreach (var p in children) p.WaitForExit();
        return 0;
    }
}
