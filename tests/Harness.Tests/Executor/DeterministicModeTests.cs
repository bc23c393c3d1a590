using System.Text.Json;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// Megatron's --deterministic-mode: libtorch's own switch really turns on (read back through its getter), a run sets it for its
/// whole length and records that it did, and on CPU, whose kernels are deterministic already, it trains the same losses bit for
/// bit, on one device and on tensor- and pipeline-parallel ranks (no operator of either path lacks a deterministic version).
/// Runs with the other training tests: the switch is the process's.
/// </summary>
[Collection("training")]
public class DeterministicModeTests
{
    private static readonly ModelSpec Small = DefaultRun.Model with { SeqLength = 32 };

    [Fact]
    public void TheSwitchIsLibtorchsOwn()
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        try
        {
            Determinism.Set(true);
            Assert.True(Determinism.On);
        }
        finally { Determinism.Set(false); }
        Assert.False(Determinism.On);
    }

    [Fact]
    public void ADeterministicRunTrainsTheSameLossesAndSaysSo()
    {
        var description = new RunDescription(MicroBatch: 2, GlobalBatch: 4);
        var (plain, plainRecord) = Train(description, deterministic: false);
        var (deterministic, record) = Train(description, deterministic: true);
        Assert.Equal(plain, deterministic);
        Assert.False(plainRecord);
        Assert.True(record);
    }

    [Fact]
    public void TensorAndPipelineParallelRanksRunDeterministicToo()
    {
        var description = new RunDescription(TensorParallel: 2, PipelineParallel: 2, SequenceParallel: true, MicroBatch: 2, GlobalBatch: 4);
        var (plain, _) = Train(description, deterministic: false);
        var (deterministic, record) = Train(description, deterministic: true);
        Assert.Equal(plain, deterministic);
        Assert.True(record);
    }

    /// <summary>The losses of 3 iterations, and whether the record's settings say deterministic mode; libtorch's switch is left
    /// off afterwards.</summary>
    private static (double[] Losses, bool Recorded) Train(RunDescription description, bool deterministic)
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-deterministic-{Guid.NewGuid():N}");
        try
        {
            var settings = new RunSettings(TrainIters: 3, Seed: 7, DataPath: DataBlend.Single(DefaultRun.DataPath), LogInterval: 1,
                Out: dir, NprocPerNode: description.WorldSize, DeterministicMode: deterministic);
            var run = new TrainingRun(Small, description, settings, dir, _ => { });
            if (description.WorldSize == 1) run.RunSingleDevice();
            else InProcessJob.Run(description.WorldSize, world => run.RunRank(world, CPU, 0));
            Assert.Equal(deterministic, Determinism.On);
            using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
            var rows = File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Select(line => line.Split(',')).ToArray();
            int loss = Array.IndexOf(rows[0], "loss");
            return (rows.Skip(1).Select(r => double.Parse(r[loss], System.Globalization.CultureInfo.InvariantCulture)).ToArray(),
                summary.RootElement.GetProperty("Settings").GetProperty("DeterministicMode").GetBoolean());
        }
        finally
        {
            Determinism.Set(false);
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
