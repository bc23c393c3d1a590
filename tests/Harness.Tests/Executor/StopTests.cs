using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Harness.Cli.Commands;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// How a run ends early, as Megatron's checkpoint_and_decide_exit ends it: a real SIGTERM or SIGINT sent to a `harness run`
/// process (one device, or several CPU ranks), --exit-interval and --exit-duration-in-mins. Each finishes the iteration,
/// saves it where --save is set, writes metrics.csv, summary.json and the plots, and says so in one line.
/// </summary>
[Collection("Console")]
public class StopTests
{
    private static readonly string[] Tiny =
    [
        "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "64", "--mock-data",
        "--micro-batch-size", "1", "--global-batch-size", "2", "--log-interval", "1",
    ];

    private static string NewFolder() => Path.Combine(TestTemp.Root, $"harness-stop-{Guid.NewGuid():N}");

    [DllImport("libc", EntryPoint = "kill")]
    private static extern int Kill(int pid, int signal);

    [Theory]
    [InlineData(15, 143, "SIGTERM")]
    [InlineData(15, 143, "SIGTERM", "--device", "cpu", "--nproc-per-node", "2", "--tensor-model-parallel-size", "2")]
    [InlineData(2, 130, "SIGINT", "--device", "cpu", "--nproc-per-node", "2")]
    public void ASignalToAHarnessRunProcessFinishesTheIterationSavesAndSaysSo(int signal, int expectedCode, string name, params string[] layout)
    {
        string root = NewFolder(), ckpt = Path.Combine(root, "ckpt"), output = Path.Combine(root, "out");
        // Through env --default-signal (which execs harness in its own process): a test host started as a background job
        // ignores SIGINT, its children inherit that, and the runtime keeps an inherited SIGINT ignored, as POSIX asks.
        var psi = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in (string[])["--default-signal=INT,TERM", Path.Combine(AppContext.BaseDirectory, "harness"), "run", .. Tiny, "--train-iters", "100000",
                     "--save", ckpt, "--out", output, .. layout]) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var lines = new ConcurrentQueue<string>();
        var error = new ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lines.Enqueue(e.Data);
            // Sent once, when iteration 2 is reported: the run finishes the iteration under way when it lands.
            if (e.Data.StartsWith("iter      2/", StringComparison.Ordinal)) Kill(process.Id, signal);
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) error.Enqueue(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3))) process.Kill(entireProcessTree: true);
        process.WaitForExit();
        string all = string.Join('\n', lines) + "\n" + string.Join('\n', error);
        Assert.True(process.ExitCode == expectedCode, all);
        long saved = long.Parse(File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
        // How many iterations the tiny model runs before the signal lands depends on the load; it stopped well before the end.
        Assert.InRange(saved, 2, 1000);
        Assert.Contains($"harness run: interrupted ({name}) after iteration {saved} of 100000; saved a checkpoint of it in {ckpt} (resume with --load {ckpt}).", lines);
        Assert.Equal(1 + saved, File.ReadAllLines(Path.Combine(output, "metrics.csv")).Length);
        using (var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json"))))
        {
            Assert.Equal(saved, summary.RootElement.GetProperty("Iterations").GetInt64());
            Assert.Equal(name == "SIGTERM" ? "Terminate" : "Interrupt", summary.RootElement.GetProperty("StoppedBy").GetString());
        }
        Assert.True(File.Exists(Path.Combine(output, "loss.png")) && File.Exists(Path.Combine(output, "throughput.png")));
        Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void ExitIntervalSavesAndExitsWithZero()
    {
        string root = NewFolder(), ckpt = Path.Combine(root, "ckpt"), output = Path.Combine(root, "out");
        var (code, stdout, stderr) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, "--train-iters", "10", "--exit-interval", "4", "--save-interval", "3", "--exit-signal-handler",
            "--save", ckpt, "--out", output]);
        Assert.True(code == 0, stderr);
        // Megatron's iteration % exit_interval == 0: after iteration 4, with the regular save at 3 kept and 4 saved once.
        Assert.Contains($"harness run: stopped by --exit-interval 4 after iteration 4 of 10; saved a checkpoint of it in {ckpt} (resume with --load {ckpt}).", stdout);
        Assert.Equal("4", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
        Assert.Equal(["iter_0000003", "iter_0000004"], Directory.GetDirectories(ckpt).Select(Path.GetFileName).Order());
        Assert.Equal(1 + 4, File.ReadAllLines(Path.Combine(output, "metrics.csv")).Length);
        Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void ExitDurationStopsEveryRankAfterTheSameIteration()
    {
        // A deadline already passed: every rank reads it after its first step and they agree on stopping there.
        TorchRuntime.Initialize();
        string root = NewFolder(), ckpt = Path.Combine(root, "ckpt"), output = Path.Combine(root, "out");
        var description = new RunDescription(TensorParallel: 2, DataParallel: 2, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32);
        var settings = new RunSettings(TrainIters: 10, MockData: true, Save: ckpt, LogInterval: 1, ExitDurationInMins: 1);
        var lines = new ConcurrentQueue<string>();
        var run = new TrainingRun(Parallel.Reference.Gpt(), description, settings, output, lines.Enqueue);
        var stop = new RunStop(TimeSpan.Zero);
        InProcessJob.Run(description.WorldSize, world => run.RunRank(world, CPU, 0, stop));
        Assert.Equal(StopReason.ExitDuration, run.Stopped);
        Assert.Contains($"harness run: stopped by --exit-duration-in-mins 1 after iteration 1 of 10; saved a checkpoint of it in {ckpt} (resume with --load {ckpt}).", lines);
        Assert.Equal("1", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
        Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void TheMostUrgentStopStaysAndExitCodesAreTheShells()
    {
        var stop = new RunStop();
        Assert.Equal(StopReason.None, stop.Pending);
        stop.Request(StopReason.Terminate);
        stop.Request(StopReason.Interrupt);
        Assert.Equal(StopReason.Terminate, stop.Pending);
        // A signal outranks a passed deadline.
        var late = new RunStop(TimeSpan.Zero);
        Thread.Sleep(1);
        Assert.Equal(StopReason.ExitDuration, late.Pending);
        late.Request(StopReason.Interrupt);
        Assert.Equal(StopReason.Interrupt, late.Pending);
        Assert.Equal((143, 130, 0, 0, 0), (StopSignals.ExitCode(StopReason.Terminate), StopSignals.ExitCode(StopReason.Interrupt),
            StopSignals.ExitCode(StopReason.ExitDuration), StopSignals.ExitCode(StopReason.ExitInterval), StopSignals.ExitCode(StopReason.None)));
        Assert.True(new RunSettings(TrainIters: 10, ExitInterval: 5).ExitDue(5));
        Assert.False(new RunSettings(TrainIters: 10, ExitInterval: 5).ExitDue(10)); // the run ends there anyway
        Assert.False(new RunSettings(TrainIters: 10, ExitInterval: 5).ExitDue(4));
    }
}
