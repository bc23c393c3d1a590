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
}
