using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

public class ProgressLinesTests
{
    [Theory]
    [InlineData(0.4, "1s")]
    [InlineData(45, "45s")]
    [InlineData(200, "3m20s")]
    [InlineData(7500, "2h05m")]
    public void TheRemainingTimeReadsAsAPersonWritesIt(double seconds, string expected) =>
        Assert.Equal(expected, ProgressLines.Duration(TimeSpan.FromSeconds(seconds)));

    /// <summary>Megatron's block as Python's :.6E writes it (two exponent digits), with the perplexity exp(min(20, loss)):
    /// exp(4.5) = 90.0171313, and a loss of 25 reads e^20 = 4.85165195e8.</summary>
    [Fact]
    public void TheValidationLossIsMegatronsBlock()
    {
        string line = " validation loss at iteration 100 | lm loss value: 4.500000E+00 | lm loss PPL: 9.001713E+01 | ";
        string rule = new('-', line.Length + 1);
        Assert.Equal([rule, line, rule], ProgressLines.Validation(100, 4.5));
        Assert.Contains("| lm loss value: 2.500000E+01 | lm loss PPL: 4.851652E+08 |", ProgressLines.Validation(7, 25).ElementAt(1));
    }

    /// <summary>The ETA is the median of the last ten iterations' times (the first, with its allocator growth, left out while
    /// it is among them) times the iterations left: at iteration 10 of 100 with a first iteration of 5 s and nine of 1 to
    /// 1.8 s, the median of the nine is 1.4 s and 90 are left, 126 s; the last line has none.</summary>
    [Fact]
    public void TheProgressLineEndsWithTheTimeTheIterationsLeftShouldTake()
    {
        string dir = Directory.CreateTempSubdirectory("harness-eta-").FullName;
        try
        {
            var run = new RunRecord(ModelPresets.All["tiny-gpt2"], new RunDescription(), new RunSettings(TrainIters: 100, LogInterval: 10),
                [], "cpu", "libtorch", 1, 50257, []);
            var lines = new List<string>();
            using var recorder = new RunRecorder(dir, run, lines.Add);
            recorder.Begin(0);
            IterationRecord Row(long i, double ms) => new(i, ms, 1, 0, null, 5, 1, 1e-4, 0, 0, 0, 0);
            recorder.Append(Row(1, 5000));
            for (int i = 2; i <= 10; i++) recorder.Append(Row(i, 1000 + 100 * (i - 2)));
            Assert.EndsWith(" | ETA 2m06s", Assert.Single(lines));
            for (int i = 11; i <= 100; i++) recorder.Append(Row(i, 1000));
            Assert.StartsWith("iter    100/100 |", lines[^1]);
            Assert.DoesNotContain("ETA", lines[^1]);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
