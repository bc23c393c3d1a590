using Harness.Cli.Commands;
using Harness.Executor.Training.Records;

namespace Harness.Tests;

/// <summary>harness compare: runs side by side, the validation difference taken to the first run.</summary>
[Collection("Console")]
public class CompareCommandTests
{
    /// <summary>A run folder with a metrics.csv of <paramref name="losses"/> and a validation loss at its last iteration, or
    /// the given validation losses at every iteration where one is not null.</summary>
    private static string Run(string root, string name, double[] losses, double validation, double?[]? validations = null)
    {
        string dir = Path.Combine(root, name);
        Directory.CreateDirectory(dir);
        var rows = losses.Select((l, i) => new IterationRecord(i + 1, 100 + i, 1, 1, null, l, 1, 1e-4, 0, 0, 0, 0,
            ValidationLoss: validations is null ? (i == losses.Length - 1 ? validation : null) : validations[i]));
        MetricsCsv.Rewrite(Path.Combine(dir, "metrics.csv"), rows).Dispose();
        return dir;
    }

    [Fact]
    public void TheValidationDifferenceIsToTheFirstRunAndThePlotIsWritten()
    {
        string root = Path.Combine(TestTemp.Root, $"harness-compare-{Guid.NewGuid():N}");
        var a = Run(root, "p1", [5, 4, 3.5], 3.25);
        var b = Run(root, "p0.5", [5, 4.1, 3.6], 3.375);
        string plot = Path.Combine(root, "losses.png"), csv = Path.Combine(root, "compare.csv");
        var (code, output, _) = ConsoleCapture.Run(CompareCommand.Run, a, b, "--plot", plot, "--csv", csv);
        Assert.Equal(0, code);
        Assert.True(new FileInfo(plot).Length > 1000);
        var lines = File.ReadAllLines(csv);
        Assert.Equal("p1,\"?\",1,3,0,3.5,3.25,3,0,101", lines[1]);
        Assert.Equal("p0.5,\"?\",1,3,0,3.6,3.375,3,0.125,101", lines[2]);
        Assert.Contains("+0.1250", output);
    }

    [Fact]
    public void RunsCutShortAtDifferentIterationsAreComparedWhereAllOfThemValidated()
    {
        // Validation every 2 iterations; the second run stopped after 4 of 6: both are read at iteration 4, the last both
        // evaluated, not the first at 6.
        string root = Path.Combine(TestTemp.Root, $"harness-compare-{Guid.NewGuid():N}");
        var a = Run(root, "p1", [5, 4.5, 4, 3.8, 3.6, 3.5], 0, [null, 4.6, null, 3.9, null, 3.55]);
        var b = Run(root, "p0", [5, 4.6, 4.2, 4.0], 0, [null, 4.7, null, 4.1]);
        var (code, _, _) = ConsoleCapture.Run(CompareCommand.Run, a, b, "--csv", Path.Combine(root, "compare.csv"));
        Assert.Equal(0, code);
        var lines = File.ReadAllLines(Path.Combine(root, "compare.csv"));
        Assert.Equal("p1,\"?\",1,6,0,3.5,3.9,4,0,103", lines[1]);
        Assert.StartsWith("p0,\"?\",1,4,0,4,4.1,4,0.1999", lines[2]);
    }

    [Fact]
    public void AFolderWithoutMetricsIsOneSentence()
    {
        var (code, _, err) = ConsoleCapture.Run(CompareCommand.Run, "/nonexistent-run");
        Assert.Equal(2, code);
        Assert.Contains("'/nonexistent-run' holds no metrics.csv", err);
    }
}
