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
        string dir = Path.Combine(TestTemp.Root, $"harness-parallel-{Guid.NewGuid():N}");
        var (code, output, _) = ConsoleCapture.Run(RunCommand.Run,
            [.. Tiny, "--nproc-per-node", "4", "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2", "--out", dir]);
        Assert.Equal(0, code);
        Assert.Contains(", vocabulary padded to 256 rows (the serial model's 128: its losses differ from the serial run's by the extra rows in the softmax);",
            output.Split('\n')[0]);
        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv"));
        Assert.Equal(4, lines.Length); // header + 3 iterations
        int communication = Array.IndexOf(lines[0].Split(','), "communication_ms");
        Assert.True(communication >= 0, lines[0]);
        Assert.All(lines.Skip(1), l => Assert.True(double.Parse(l.Split(',')[communication]) > 0, "no communication time recorded"));
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

    /// <summary>
    /// The same seed draws the same initial weights in every layout (WeightInit), so a run from the command line trains as the
    /// serial run does, to float32 rounding, at every iteration, and its validation losses (forward only: the pipeline's forward
    /// passes alone, ZeRO 3's units gathered, a pending all-gather finished) agree as well: the vocabulary (128, divisible by
    /// 64·2) is padded alike in both and dropout is off, so the layout's arithmetic is all that differs.
    /// </summary>
    [Theory]
    [InlineData("--nproc-per-node 8 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2")]
    [InlineData("--nproc-per-node 4 --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1 --use-distributed-optimizer --overlap-param-gather")]
    [InlineData("--nproc-per-node 4 --tensor-model-parallel-size 2 --sequence-parallel --zero-stage 3")]
    [InlineData("--nproc-per-node 2 --context-parallel-size 2")]
    public void AParallelRunLosesWhatTheSerialRunLosesAtEveryIterationAndEveryValidation(string layout)
    {
        string[] model =
        [
            "--num-layers", "4", "--hidden-size", "32", "--ffn-hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "16",
            "--vocab-size", "128", "--make-vocab-size-divisible-by", "64", "--hidden-dropout", "0", "--attention-dropout", "0", "--mock-data",
            "--train-iters", "5", "--micro-batch-size", "1", "--global-batch-size", "4", "--lr", "1e-3", "--device", "cpu",
            "--split", "90,10,0", "--eval-interval", "2", "--eval-iters", "2",
        ];
        var serial = Losses(model);
        var parallel = Losses([.. model, .. layout.Split(' ')]);
        Assert.Equal(5, serial.Training.Length);
        Assert.Equal(serial.Training.Length, parallel.Training.Length);
        // after iterations 2 and 4 (the interval) and 5 (the last)
        Assert.Equal([false, true, false, true, true], serial.Validation.Select(v => v is not null));
        Assert.Equal(serial.Validation.Select(v => v is not null), parallel.Validation.Select(v => v is not null));
        for (int i = 0; i < serial.Training.Length; i++)
        {
            AssertClose(parallel.Training[i], serial.Training[i], $"iteration {i + 1}");
            if (serial.Validation[i] is double v) AssertClose(parallel.Validation[i]!.Value, v, $"validation after iteration {i + 1}");
        }
        Assert.True(serial.Training[^1] < serial.Training[0], "the serial run does not train");
        Assert.NotEqual(serial.Validation[1], serial.Validation[3]); // each evaluation reads the validation samples after the last one's

        static void AssertClose(double actual, double expected, string what) =>
            Assert.True(Math.Abs(actual - expected) <= 1e-5 * Math.Abs(expected), $"{what}: {actual} against the serial {expected}");
    }

    /// <summary>metrics.csv's loss and validation_loss columns of a run of <paramref name="args"/> (and its first line says
    /// nothing of padding beyond the serial model's).</summary>
    internal static (double[] Training, double?[] Validation) Losses(string[] args)
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-parallel-{Guid.NewGuid():N}");
        var (code, output, error) = ConsoleCapture.Run(RunCommand.Run, [.. args, "--out", dir]);
        Assert.True(code == 0, error);
        Assert.DoesNotContain("vocabulary padded", output);
        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv"));
        var header = lines[0].Split(',').ToList();
        Directory.Delete(dir, recursive: true);
        var c = System.Globalization.CultureInfo.InvariantCulture;
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        return (rows.Select(r => double.Parse(r[header.IndexOf("loss")], c)).ToArray(),
            rows.Select(r => r[header.IndexOf("validation_loss")] is { Length: > 0 } v ? double.Parse(v, c) : (double?)null).ToArray());
    }

    /// <summary>
    /// --ranks-on-one-device runs the ranks as threads of one process on one device (on CPU the in-process path every CPU run
    /// takes, on CUDA the same on GPU 0): the same losses as without it, a first line saying that memory is the sum over ranks
    /// and times are not a cluster's, and summary.json's settings recording it, for harness validate to refuse.
    /// </summary>
    [Fact]
    public void RanksOnOneDeviceTrainAsThreadsAndTheRecordSaysSo()
    {
        string[] layout = [.. Tiny, "--nproc-per-node", "4", "--tensor-model-parallel-size", "2", "--use-distributed-optimizer"];
        (string FirstLine, string[] Losses, JsonDocument Summary) Run(params string[] extra)
        {
            string dir = Path.Combine(TestTemp.Root, $"harness-parallel-{Guid.NewGuid():N}");
            var (code, output, error) = ConsoleCapture.Run(RunCommand.Run, [.. layout, .. extra, "--out", dir]);
            Assert.True(code == 0, error);
            var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv"));
            int loss = Array.IndexOf(lines[0].Split(','), "loss");
            var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
            Directory.Delete(dir, recursive: true);
            return (output.Split('\n')[0], lines.Skip(1).Select(l => l.Split(',')[loss]).ToArray(), summary);
        }
        var threads = Run("--ranks-on-one-device");
        var plain = Run();
        Assert.Equal(plain.Losses, threads.Losses);
        Assert.Contains("; all 4 ranks on one device as threads of one process: memory is the sum over ranks, and times are not a cluster's", threads.FirstLine);
        Assert.DoesNotContain("on one device", plain.FirstLine);
        Assert.True(threads.Summary.RootElement.GetProperty("Settings").GetProperty("RanksOnOneDevice").GetBoolean());
        Assert.False(plain.Summary.RootElement.GetProperty("Settings").GetProperty("RanksOnOneDevice").GetBoolean());
        var (refused, _, sentence) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, "--ranks-on-one-device"]);
        Assert.Equal(2, refused);
        Assert.Equal("harness run: --ranks-on-one-device puts the --nproc-per-node ranks on one device; --nproc-per-node is 1, give at least 2.", sentence.Trim());
        // On CUDA the ranks would share libtorch's one CUDA generator, which dropout reseeds per mask: refused before anything starts.
        var (noDropout, _, why) = ConsoleCapture.Run(RunCommand.Run, [.. layout, "--ranks-on-one-device", "--device", "cuda"]);
        Assert.Equal(2, noDropout);
        Assert.Contains("--ranks-on-one-device on CUDA runs without dropout", why);
    }

    /// <summary>
    /// fp16 on two CPU ranks with Megatron's default initial scale 2^32, which overflows the tiny model's fp16 gradients at
    /// once (Fp16Tests): each of the three iterations is skipped (no norm), the scale goes 2^32 (hysteresis 2 spends one),
    /// 2^31, 2^30, and the learning rate holds at the schedule's first (linear decay over 3 iterations from 1e-3; Megatron
    /// steps its scheduler only after an update). The progress line counts the skipped iterations since the previous line,
    /// as Megatron's does; summary.json says fp16 ran.
    /// </summary>
    [Fact]
    public void Fp16RanksSkipOverflowingStepsAndRecordTheLossScaleAndTheSkippedIterations()
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-parallel-{Guid.NewGuid():N}");
        var (code, output, error) = ConsoleCapture.Run(RunCommand.Run,
            [.. Tiny, "--nproc-per-node", "2", "--fp16", "--accumulate-allreduce-grads-in-fp32", "--lr", "1e-3", "--min-lr", "0", "--log-interval", "2", "--out", dir]);
        Assert.True(code == 0, error);
        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv"));
        var header = lines[0].Split(',').ToList();
        string[] Column(string name) => lines.Skip(1).Select(l => l.Split(',')[header.IndexOf(name)]).ToArray();
        Assert.Equal(["4294967296", "2147483648", "1073741824"], Column("loss_scale"));
        Assert.Equal(["1", "2", "3"], Column("skipped_iterations"));
        Assert.Equal(["", "", ""], Column("grad_norm"));
        Assert.Equal(["0.001", "0.001", "0.001"], Column("learning_rate"));
        Assert.Contains("| loss scale 2147483648.0 | number of skipped iterations   2 |", output);
        Assert.Contains("| loss scale 1073741824.0 | number of skipped iterations   1 |", output);
        Assert.DoesNotContain("grad norm", output);
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
        Assert.Equal("Fp16", summary.RootElement.GetProperty("Description").GetProperty("Precision").GetString());
        Assert.Equal(3, summary.RootElement.GetProperty("SkippedIterations").GetInt64());
        Assert.Equal(1073741824, summary.RootElement.GetProperty("FinalLossScale").GetDouble());
        Directory.Delete(dir, recursive: true);
        // Megatron's default under --fp16 (no --accumulate-allreduce-grads-in-fp32): fp16 main gradients, as the record says.
        var (plain, _, plainError) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, "--nproc-per-node", "2", "--fp16", "--out", dir]);
        Assert.True(plain == 0, plainError);
        using var plainSummary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
        Assert.False(plainSummary.RootElement.GetProperty("Description").GetProperty("GradientsInFp32").GetBoolean());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void OverlappedGradientReductionRunsFromTheCommandLineAndABucketSizeBelowOneIsAUserError()
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-parallel-{Guid.NewGuid():N}");
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
        string dir = Path.Combine(TestTemp.Root, $"harness-parallel-{Guid.NewGuid():N}");
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
