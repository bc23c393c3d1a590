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
        var saved = Console.Error;
        Console.SetError(TextWriter.Null);
        try { Assert.Equal(2, ReproduceCommand.Run([.. args, "--experiments", ExperimentFileTests.ExperimentsDir])); }
        finally { Console.SetError(saved); }
    }

    [Fact]
    public void AnUnusableOutFolderIsOneSentenceBeforeAnyWork()
    {
        string file = Path.GetTempFileName();
        var (savedErr, err) = (Console.Error, new StringWriter());
        Console.SetError(err);
        try
        {
            Assert.Equal(2, ReproduceCommand.Run(["kwai-atc24-table8", "--experiments", ExperimentFileTests.ExperimentsDir, "--out", file]));
            Assert.StartsWith($"harness reproduce: --out '{file}' cannot be used as a folder", err.ToString());
            Assert.DoesNotContain("   at ", err.ToString());
        }
        finally { Console.SetError(savedErr); File.Delete(file); }
    }

    [Fact]
    public void WritesACsvAndAPngPerTable()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"harness-repro-{Guid.NewGuid():N}");
        var saved = Console.Out;
        var captured = new StringWriter();
        Console.SetOut(captured);
        try
        {
            Assert.Equal(0, ReproduceCommand.Run(["kwai-atc24-table8", "--json", "--experiments", ExperimentFileTests.ExperimentsDir, "--out", dir]));
            Assert.True(File.Exists(Path.Combine(dir, "kwai-atc24-table8.csv")));
            Assert.True(new FileInfo(Path.Combine(dir, "kwai-atc24-table8.png")).Length > 1000);
            using var doc = System.Text.Json.JsonDocument.Parse(captured.ToString());
            Assert.Equal(4, doc.RootElement.GetProperty("tables")[0].GetProperty("rows").GetInt32());
        }
        finally
        {
            Console.SetOut(saved);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
