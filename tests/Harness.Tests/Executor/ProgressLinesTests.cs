using Harness.Executor.Training.Records;

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
}
