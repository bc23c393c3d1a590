using Harness.Cli.Commands;

namespace Harness.Tests.Executor;

/// <summary>`harness preprocess` user mistakes: one sentence naming the value, exit 2, no stack trace.</summary>
[Collection("Console")]
public class PreprocessCommandTests
{
    private static (int Code, string Error) Run(params string[] args)
    {
        var err = new StringWriter();
        var old = Console.Error;
        Console.SetError(err);
        try { return (PreprocessCommand.Run(args), err.ToString().Trim()); }
        finally { Console.SetError(old); }
    }

    [Fact]
    public void MissingInputIsNamed()
    {
        var (code, error) = Run("--input", "/nonexistent/docs.jsonl", "--output-prefix", Path.Combine(Path.GetTempPath(), "unused"));
        Assert.Equal(2, code);
        Assert.Equal("harness preprocess: --input '/nonexistent/docs.jsonl' does not exist.", error);
    }

    [Fact]
    public void AFolderAsInputIsNamedAsAFolder()
    {
        string folder = Path.GetTempPath();
        var (code, error) = Run("--input", folder, "--output-prefix", Path.Combine(folder, "unused"));
        Assert.Equal(2, code);
        Assert.Equal($"harness preprocess: --input '{folder}' is a folder; give a file of JSON lines (.jsonl) or plain text.", error);
    }

    [Fact]
    public void AnUnwritableOutputPrefixIsAUserError()
    {
        string input = Path.GetTempFileName();
        string blocker = Path.GetTempFileName(); // a file where the prefix needs a folder
        try
        {
            File.WriteAllText(input, "one document\n");
            var (code, error) = Run("--input", input, "--output-prefix", Path.Combine(blocker, "data"));
            Assert.Equal(2, code);
            Assert.StartsWith("harness preprocess: ", error);
            Assert.EndsWith("; --output-prefix must name a writable path.", error);
            Assert.DoesNotContain("\n", error);
        }
        finally
        {
            File.Delete(input);
            File.Delete(blocker);
        }
    }

    [Theory]
    [InlineData(".txt")]
    [InlineData(".jsonl")]
    public void InvalidUtf8AndEmptyInputAreRefusedInOneSentence(string extension)
    {
        string root = Path.Combine(Path.GetTempPath(), $"harness-pre-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        try
        {
            string bad = Path.Combine(root, "latin1" + extension), empty = Path.Combine(root, "empty" + extension);
            byte[] cafe = [.. "{\"text\": \"caf"u8, 0xE9, .. "\"}\n"u8]; // 'café' in Latin-1: 0xE9 alone is not UTF-8
            File.WriteAllBytes(bad, extension == ".jsonl" ? cafe : [.. "caf"u8, 0xE9, (byte)'\n']);
            File.WriteAllText(empty, "\n\n");
            string prefix = Path.Combine(root, "out");
            Assert.Equal((2, $"harness preprocess: --input '{bad}' is not UTF-8 (it holds the bytes 0xE9); convert it to UTF-8 (iconv -t UTF-8) first."),
                Run("--input", bad, "--output-prefix", prefix));
            Assert.Equal((2, $"harness preprocess: --input '{empty}' holds no document (it is empty or blank); give a file with text in it."),
                Run("--input", empty, "--output-prefix", prefix));
        }
        finally { Directory.Delete(root, recursive: true); }
    }
}
