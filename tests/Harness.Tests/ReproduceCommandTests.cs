using Harness.Cli.Commands;

namespace Harness.Tests;

/// <summary>`harness reproduce` rejects bad input with exit code 2 and writes its files where asked.</summary>
[Collection("Console")]
public class ReproduceCommandTests
{
    [Theory]
    [InlineData("no-such-table")]
    [InlineData("all", "--bogus")]
    [InlineData("all", "--out")]
    public void BadInputExitsWithTwo(params string[] args)
    {
        Assert.Equal(2, ConsoleCapture.Run(ReproduceCommand.Run, [.. args, "--experiments", ExperimentFileTests.ExperimentsDir]).Code);
    }

    [Fact]
    public void AnUnusableOutFolderIsOneSentenceBeforeAnyWork()
    {
        string file = Path.GetTempFileName();
        try
        {
            var (code, _, err) = ConsoleCapture.Run(ReproduceCommand.Run, "kwai-atc24-table8", "--experiments", ExperimentFileTests.ExperimentsDir, "--out", file);
            Assert.Equal(2, code);
            Assert.StartsWith($"harness reproduce: --out '{file}' cannot be used as a folder", err);
            Assert.DoesNotContain("   at ", err);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void AHeldOutTableAloneReportsNoEmptyPool()
    {
        // Figure 9 is held out: nothing of it is pooled into the overall throughput, so the overall line says what it has.
        // Its files go to a folder of the test's own, not the repository's results/reproductions.
        string dir = Path.Combine(TestTemp.Root, $"harness-repro-{Guid.NewGuid():N}");
        try
        {
            var (code, output, _) = ConsoleCapture.Run(ReproduceCommand.Run, "kwai-atc24-fig9", "--experiments", ExperimentFileTests.ExperimentsDir, "--out", dir);
            Assert.Equal(0, code);
            Assert.Contains("overall fit decisions right 41/41; method order right", output);
            Assert.DoesNotContain("over 0 rows", output);
            Assert.Contains("held out (generalization, not pooled above): throughput MAPE 1.75 %", output);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void WritesACsvAndAPngPerTable()
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-repro-{Guid.NewGuid():N}");
        try
        {
            var (code, output, _) = ConsoleCapture.Run(ReproduceCommand.Run, "kwai-atc24-table8", "--json", "--experiments", ExperimentFileTests.ExperimentsDir, "--out", dir);
            Assert.Equal(0, code);
            Assert.True(File.Exists(Path.Combine(dir, "kwai-atc24-table8.csv")));
            Assert.True(new FileInfo(Path.Combine(dir, "kwai-atc24-table8.png")).Length > 1000);
            using var doc = System.Text.Json.JsonDocument.Parse(output);
            Assert.Equal(4, doc.RootElement.GetProperty("tables")[0].GetProperty("rows").GetInt32());
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
