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
        var (code, error) = Run("--input", "/nonexistent/docs.jsonl", "--output-prefix", Path.Combine(TestTemp.Root, "unused"));
        Assert.Equal(2, code);
        Assert.Equal("harness preprocess: --input '/nonexistent/docs.jsonl' does not exist.", error);
    }

    [Fact]
    public void AFolderAsInputIsNamedAsAFolder()
    {
        string folder = TestTemp.Root;
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
        string root = Path.Combine(TestTemp.Root, $"harness-pre-{Guid.NewGuid():N}");
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

    [Fact]
    public void MegatronsFlagsNameOneDatasetPerKeyAndAppendTheEndOfDocumentOnlyWhenAsked()
    {
        string root = Path.Combine(TestTemp.Root, $"harness-pre-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        try
        {
            string input = Path.Combine(root, "docs.jsonl");
            File.WriteAllLines(input, ["{\"text\": \"Hello world\", \"title\": \"One\"}", "{\"text\": \"Hello\", \"title\": \"Two\"}"]);
            string prefix = Path.Combine(root, "out");
            Assert.Equal((0, ""), Run("--input", input, "--output-prefix", prefix, "--json-keys", "text", "title", "--append-eod", "--workers", "2",
                "--tokenizer-type", "GPT2BPETokenizer"));
            using (var text = new Harness.Executor.Data.IndexedDataset(prefix + "_text_document"))
            {
                // "Hello" = 15496, " world" = 995, then <|endoftext|> = 50256.
                Assert.Equal(new long[] { 15496, 995, 50256 }, text.Sequence(0).Select(t => (long)t));
                Assert.Equal(new long[] { 15496, 50256 }, text.Sequence(1).Select(t => (long)t));
            }
            using (var title = new Harness.Executor.Data.IndexedDataset(prefix + "_title_document"))
                Assert.Equal(2, title.Sizes.Length);
            // Without --append-eod, as Megatron: the documents alone.
            Assert.Equal((0, ""), Run("--input", input, "--output-prefix", prefix + "-bare"));
            using var bare = new Harness.Executor.Data.IndexedDataset(prefix + "-bare_text_document");
            Assert.Equal(new long[] { 15496, 995 }, bare.Sequence(0).Select(t => (long)t));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Theory]
    [InlineData("--tokenizer-type", "BertWordPieceCase", "harness preprocess: --tokenizer-type 'BertWordPieceCase' is not one Harness has; valid: GPT2BPETokenizer, HuggingFaceTokenizer, GPTSentencePieceTokenizer, Llama2Tokenizer.")]
    [InlineData("--tokenizer-type", "HuggingFaceTokenizer", "harness preprocess: --tokenizer-type HuggingFaceTokenizer needs --tokenizer-model (a tokenizer.json, or the folder holding it).")]
    [InlineData("--tokenizer-model", "/nonexistent/tokenizer.model", "harness preprocess: --tokenizer-model is for the tokenizers read from a file; GPT2BPETokenizer's vocabulary is built in.")]
    [InlineData("--workers", "0", "harness preprocess: --workers '0' is not a number of workers from 1 to 1024.")]
    public void AnUnknownTokenizerOrWorkerCountIsOneSentence(string flag, string value, string expected)
    {
        string input = Path.GetTempFileName();
        try
        {
            File.WriteAllText(input, "one document\n");
            Assert.Equal((2, expected), Run("--input", input, "--output-prefix", Path.Combine(TestTemp.Root, "unused"), flag, value));
        }
        finally { File.Delete(input); }
    }
}
