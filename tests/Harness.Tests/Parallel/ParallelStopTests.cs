using System.Collections.Concurrent;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>Ctrl-C in a parallel run: the ranks agree on the iteration to stop after (a rank stopping alone would leave the
/// others waiting in a collective), save it, and rank 0 says so and writes its records.</summary>
public class ParallelStopTests
{
    [Fact]
    public void EveryRankStopsAfterTheSameIterationAndTheRunIsSaved()
    {
        TorchRuntime.Initialize();
        string root = Path.Combine(TestTemp.Root, $"harness-stop-{Guid.NewGuid():N}"), ckpt = Path.Combine(root, "ckpt"), output = Path.Combine(root, "out");
        var description = new RunDescription(TensorParallel: 2, PipelineParallel: 2, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32);
        var settings = new RunSettings(TrainIters: 10, MockData: true, Save: ckpt, LogInterval: 1);
        var stop = new RunStop();
        var lines = new ConcurrentQueue<string>();
        // Cancelled while rank 0 reports iteration 1: every rank reads it after its second step, which needs rank 0.
        var run = new TrainingRun(Reference.Gpt(), description, settings, output, line =>
        {
            lines.Enqueue(line);
            if (line.StartsWith("iter      1/")) stop.Request(StopReason.Terminate);
        });
        InProcessJob.Run(description.WorldSize, world => run.RunRank(world, CPU, 0, stop));
        Assert.Equal(StopReason.Terminate, run.Stopped);
        Assert.Contains($"harness run: interrupted (SIGTERM) after iteration 2 of 10; saved a checkpoint of it in {ckpt} (resume with --load {ckpt}).", lines);
        Assert.Equal("2", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
        Assert.Equal(1 + 2, File.ReadAllLines(Path.Combine(output, "metrics.csv")).Length);
        Assert.True(File.Exists(Path.Combine(output, "summary.json")));
        Directory.Delete(root, recursive: true);
    }
}
