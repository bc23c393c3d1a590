using System.Text.Json;
using Harness.Cli.Commands;

namespace Harness.Tests.Parallel;

[Collection("Console")]
public class ParallelRunCommandTests
{
    private static readonly string[] Tiny =
    [
        "--num-layers", "2", "--hidden-size", "32", "--ffn-hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "16",
        "--vocab-size", "101", "--mock-data", "--train-iters", "3", "--micro-batch-size", "1", "--global-batch-size", "4", "--device", "cpu",
    ];

    [Fact]
    public void CpuRanksTrainAndRank0RecordsEveryRanksPeakMemoryAndCommunicationTime()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"harness-parallel-{Guid.NewGuid():N}");
        int code = RunCommand.Run([.. Tiny, "--nproc-per-node", "4", "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2", "--out", dir]);
        Assert.Equal(0, code);
        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv"));
        Assert.Equal(4, lines.Length); // header + 3 iterations
        Assert.EndsWith("communication_ms", lines[0]);
        Assert.All(lines.Skip(1), l => Assert.True(double.Parse(l.Split(',')[^1]) > 0, "no communication time recorded"));
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
        var peaks = summary.RootElement.GetProperty("PeakMemoryBytesPerRank").EnumerateArray().Select(e => e.GetInt64()).ToList();
        Assert.Equal(4, peaks.Count);
        Assert.Equal(peaks.Max(), summary.RootElement.GetProperty("PeakMemoryBytes").GetInt64());
        // vocabulary 101 is padded to 256 (Megatron: a multiple of 128·t) so it splits over two ranks
        Assert.Equal(256, summary.RootElement.GetProperty("Model").GetProperty("VocabSize").GetInt32());
        // The description as the executor ran it, for harness validate: its pipeline p2p waits (no overlap), and a note says why.
        var description = summary.RootElement.GetProperty("Description");
        Assert.Equal((2, 2, 1), (description.GetProperty("TensorParallel").GetInt32(), description.GetProperty("PipelineParallel").GetInt32(),
            description.GetProperty("DataParallel").GetInt32()));
        Assert.False(description.GetProperty("Overlap").GetProperty("PipelineP2p").GetBoolean());
        Assert.Contains(summary.RootElement.GetProperty("Notes").EnumerateArray(), n => n.GetString()!.StartsWith("pipeline p2p is not overlapped"));
        // Stored once: no second copy of the layout or of the recomputation.
        Assert.False(summary.RootElement.TryGetProperty("Parallel", out _));
        Assert.False(description.TryGetProperty("RecomputeOrNone", out _));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void OverlappedGradientReductionRunsFromTheCommandLineAndABucketSizeBelowOneIsAUserError()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"harness-parallel-{Guid.NewGuid():N}");
        var (code, output, _) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, "--nproc-per-node", "2", "--overlap-grad-reduce", "--ddp-bucket-size", "2000", "--out", dir]);
        Assert.Equal(0, code);
        Assert.Contains("dp 2 overlap-grad-reduce,", output);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Length);
        Directory.Delete(dir, recursive: true);
        var (bad, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, "--nproc-per-node", "2", "--ddp-bucket-size", "0", "--out", dir]);
        Assert.Equal(2, bad);
        Assert.Equal("harness run: --ddp-bucket-size is 0; it must be at least 1 (elements).", error.Trim());
    }

    [Fact]
    public void OverlappedParamGatherRunsFromTheCommandLineWithTheDistributedOptimizerOnly()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"harness-parallel-{Guid.NewGuid():N}");
        var (code, output, _) = ConsoleCapture.Run(RunCommand.Run,
            [.. Tiny, "--nproc-per-node", "2", "--use-distributed-optimizer", "--overlap-param-gather", "--ddp-bucket-size", "2000", "--out", dir]);
        Assert.Equal(0, code);
        Assert.Contains("dp 2 distributed-optimizer overlap-param-gather,", output);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Length);
        Directory.Delete(dir, recursive: true);
        var (bad, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, "--nproc-per-node", "2", "--overlap-param-gather", "--out", dir]);
        Assert.Equal(2, bad);
        Assert.Equal("harness run: --overlap-param-gather needs --use-distributed-optimizer: it overlaps that optimizer's all-gather of the weights.", error.Trim());
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void ALayoutThatDoesNotDivideTheRanksIsAUserError()
    {
        var err = new StringWriter();
        var old = Console.Error;
        Console.SetError(err);
        try { Assert.Equal(2, RunCommand.Run([.. Tiny, "--nproc-per-node", "3", "--tensor-model-parallel-size", "2"])); }
        finally { Console.SetError(old); }
        Assert.Equal("harness run: world size 3 is not divisible by tensor 2 x pipeline 1 x context 1 = 2; choose sizes whose product divides the number of GPUs.", err.ToString().Trim());
    }
}
