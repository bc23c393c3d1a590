using System.Text.Json;
using Google.Protobuf;
using Harness.Cli.Commands;
using Harness.Executor.Data;

namespace Harness.Tests.Executor;

/// <summary>
/// The tokenizers Megatron's --tokenizer-type names, on tokenizer files the tests make: a byte-level BPE tokenizer.json
/// (GPT-2's pre-tokenizer, and Llama 3's Split, template and ignore_merges) and a SentencePiece BPE model written as the
/// ModelProto it is. Every id below is derived by hand from the tables here.
/// </summary>
[Collection("Console")]
public class TokenizerTests
{
    /// <summary>Byte-level vocabulary: 'Ġ' is the space (GPT-2's bytes_to_unicode maps byte 0x20 to U+0120).</summary>
    private static readonly string[] Vocabulary =
        ["h", "e", "l", "o", "Ġ", "w", "r", "d", "ll", "he", "hell", "hello", "Ġw", "or", "Ġwor", "Ġworl", "Ġworld"];

    private static readonly string[] Merges = ["l l", "h e", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"];

    /// <summary>A GPT-2-style tokenizer.json (ByteLevel pre-tokenizer with its regex), &lt;|endoftext|&gt; added as id 17, and a
    /// tokenizer_config.json naming it the eos_token.</summary>
    private static string Gpt2Style(string dir)
    {
        var json = new
        {
            version = "1.0",
            added_tokens = new[] { new { id = 17, content = "<|endoftext|>", special = true } },
            normalizer = (object?)null,
            pre_tokenizer = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            post_processor = new { type = "ByteLevel" },
            decoder = new { type = "ByteLevel" },
            model = new
            {
                type = "BPE", unk_token = (string?)null, byte_fallback = false,
                vocab = Vocabulary.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i), merges = Merges,
            },
        };
        string path = Path.Combine(dir, "tokenizer.json");
        File.WriteAllText(path, JsonSerializer.Serialize(json));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"eos_token": "<|endoftext|>"}""");
        return path;
    }

    /// <summary>
    /// "hello world": GPT-2's regex cuts "hello" and " world"; h e l l o merges by rank l+l, h+e, he+ll, hell+o to hello (11),
    /// Ġ w o r l d by Ġ+w, o+r, Ġw+or, Ġwor+l, Ġworl+d to Ġworld (16). "hold": no pair of h o l d has a rank: 0 3 2 7. "held": h+e
    /// then no rank for he+l: 9 2 7. Two spaces: \s+(?!\S) takes the first alone (Ġ, 4), the second starts " world".
    /// </summary>
    [Theory]
    [InlineData("hello world", new[] { 11, 16 })]
    [InlineData("hold", new[] { 0, 3, 2, 7 })]
    [InlineData("held", new[] { 9, 2, 7 })]
    [InlineData("hello  world", new[] { 11, 4, 16 })]
    [InlineData("hello<|endoftext|>hold", new[] { 11, 17, 0, 3, 2, 7 })]
    public void AByteLevelBpeTokenizerJsonEncodesAsTheTokenizersLibrary(string text, int[] ids)
    {
        string dir = Directory.CreateTempSubdirectory("harness-tok-").FullName;
        try
        {
            var tokenizer = TextTokenizers.Create(TextTokenizers.HuggingFace, Gpt2Style(dir));
            Assert.Equal(ids, tokenizer.Encode(text));
            Assert.Equal(text, tokenizer.Decode(ids));
            Assert.Equal(18, tokenizer.VocabSize); // 17 tokens and <|endoftext|>
            Assert.Equal(17, tokenizer.EndOfDocument);
            // The folder holding tokenizer.json reads the same.
            Assert.Equal(ids, TextTokenizers.Create(TextTokenizers.HuggingFace, dir).Encode(text));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>Llama 3's layout: a Split on its regex before a ByteLevel that only maps bytes, ignore_merges (a piece in the
    /// vocabulary is one token even where no merge builds it: "hold", 17, not h o l d), and a template putting
    /// &lt;|begin_of_text|&gt; (18) first; no tokenizer_config.json, so no end-of-document id.</summary>
    [Fact]
    public void ASplitPreTokenizerTemplateAndIgnoreMergesAreLlamaThreesLayout()
    {
        string dir = Directory.CreateTempSubdirectory("harness-tok-").FullName;
        try
        {
            const string llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
            var json = new
            {
                added_tokens = new[] { new { id = 18, content = "<|begin_of_text|>", special = true } },
                pre_tokenizer = new
                {
                    type = "Sequence",
                    pretokenizers = new object[]
                    {
                        new { type = "Split", pattern = new { Regex = llama3 }, behavior = "Isolated", invert = false },
                        new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = false },
                    },
                },
                post_processor = new
                {
                    type = "Sequence",
                    processors = new object[]
                    {
                        new { type = "ByteLevel" },
                        new
                        {
                            type = "TemplateProcessing",
                            single = new object[] { new { SpecialToken = new { id = "<|begin_of_text|>", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } } },
                            special_tokens = new Dictionary<string, object> { ["<|begin_of_text|>"] = new { id = "<|begin_of_text|>", ids = new[] { 18 }, tokens = new[] { "<|begin_of_text|>" } } },
                        },
                    },
                },
                model = new
                {
                    type = "BPE", ignore_merges = true,
                    vocab = Vocabulary.Append("hold").Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i),
                    merges = Merges.Select(m => m.Split(' ')).ToArray(),
                },
            };
            string path = Path.Combine(dir, "tokenizer.json");
            File.WriteAllText(path, JsonSerializer.Serialize(json));
            var tokenizer = TextTokenizers.Create(TextTokenizers.HuggingFace, path);
            Assert.Equal([18, 17, 16], tokenizer.Encode("hold world"));
            Assert.Equal("hold world", tokenizer.Decode([17, 16]));
            Assert.Null(tokenizer.EndOfDocument);
            Assert.Equal(19, tokenizer.VocabSize);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>Pieces of a SentencePiece BPE model: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, the characters, then merged pieces whose scores order
    /// the merges (highest first).</summary>
    private static readonly (string Piece, float Score, int Type)[] Pieces =
    [
        ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),
        ("▁", -10, 1), ("h", -11, 1), ("e", -12, 1), ("l", -13, 1), ("o", -14, 1), ("w", -15, 1), ("r", -16, 1), ("d", -17, 1),
        ("ll", -1, 1), ("▁w", -2, 1), ("▁h", -3, 1), ("or", -4, 1), ("llo", -5, 1),
    ];

    /// <summary>A SentencePiece ModelProto (sentencepiece_model.proto) written field by field: pieces (1: piece, score, type),
    /// trainer_spec (2: model_type 3 = BPE, vocab_size 4, unk_id 40, bos_id 41, eos_id 42) and normalizer_spec (3: name
    /// "identity", add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces), as Llama's tokenizer.model.</summary>
    internal static string SentencePieceModel(string dir)
    {
        using var stream = new MemoryStream();
        var output = new CodedOutputStream(stream);
        void Message(int field, Action<CodedOutputStream> write)
        {
            using var inner = new MemoryStream();
            var o = new CodedOutputStream(inner);
            write(o);
            o.Flush();
            output.WriteTag(field, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
        }
        foreach (var (piece, score, type) in Pieces)
            Message(1, o =>
            {
                o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString(piece);
                o.WriteTag(2, WireFormat.WireType.Fixed32); o.WriteFloat(score);
                o.WriteTag(3, WireFormat.WireType.Varint); o.WriteEnum(type);
            });
        Message(2, o =>
        {
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteEnum(2);
            o.WriteTag(4, WireFormat.WireType.Varint); o.WriteInt32(Pieces.Length);
            o.WriteTag(40, WireFormat.WireType.Varint); o.WriteInt32(0);
            o.WriteTag(41, WireFormat.WireType.Varint); o.WriteInt32(1);
            o.WriteTag(42, WireFormat.WireType.Varint); o.WriteInt32(2);
        });
        Message(3, o =>
        {
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString("identity");
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteBool(true);
            o.WriteTag(4, WireFormat.WireType.Varint); o.WriteBool(true);
            o.WriteTag(5, WireFormat.WireType.Varint); o.WriteBool(true);
        });
        output.Flush();
        string path = Path.Combine(dir, "tokenizer.model");
        File.WriteAllBytes(path, stream.ToArray());
        return path;
    }

    /// <summary>
    /// "hello world" becomes "▁hello▁world" (the dummy prefix, spaces escaped), then the pair whose merged piece scores highest
    /// merges first: l+l (-1), ▁+w (-2), ▁+h (-3), o+r (-4), then ll+o (-5) now adjacent: ▁h e llo ▁w or l d, ids 13 5 15 12 14 6 10.
    /// "hz": z is no piece, so &lt;unk&gt; (0). No BOS: Megatron's SentencePiece tokenizer encodes with encode_as_ids.
    /// </summary>
    [Theory]
    [InlineData(TextTokenizers.GptSentencePiece)]
    [InlineData(TextTokenizers.Llama2)]
    public void ASentencePieceModelEncodesByPieceScores(string type)
    {
        string dir = Directory.CreateTempSubdirectory("harness-tok-").FullName;
        try
        {
            var tokenizer = TextTokenizers.Create(type, SentencePieceModel(dir));
            Assert.Equal([13, 5, 15, 12, 14, 6, 10], tokenizer.Encode("hello world"));
            Assert.Equal("hello world", tokenizer.Decode([13, 5, 15, 12, 14, 6, 10]));
            Assert.Equal([13, 0], tokenizer.Encode("hz"));
            Assert.Equal(16, tokenizer.VocabSize);
            Assert.Equal(2, tokenizer.EndOfDocument); // eos_id
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static (int Code, string Error) Preprocess(params string[] args)
    {
        var (code, _, error) = ConsoleCapture.Run(PreprocessCommand.Run, args);
        return (code, error.Trim());
    }

    /// <summary>harness preprocess with each file tokenizer: the documents' hand-derived ids, each followed by the end-of-document id
    /// under --append-eod; then harness run sizes the model's vocabulary from the same tokenizer (18, padded to 128 as Megatron pads).</summary>
    [Fact]
    public void PreprocessWritesTheTokenizersIdsAndRunTakesItsVocabulary()
    {
        string dir = Directory.CreateTempSubdirectory("harness-tok-").FullName;
        try
        {
            string input = Path.Combine(dir, "docs.jsonl");
            File.WriteAllLines(input, [.. Enumerable.Repeat("""{"text": "hello world"}""", 20), """{"text": "hold"}"""]);
            string json = Gpt2Style(dir), model = SentencePieceModel(dir);
            Assert.Equal(0, Preprocess("--input", input, "--output-prefix", Path.Combine(dir, "hf"), "--append-eod",
                "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", json).Code);
            using (var hf = new IndexedDataset(Path.Combine(dir, "hf_text_document")))
            {
                Assert.Equal([11L, 16, 17], hf.Sequence(0));
                Assert.Equal([0L, 3, 2, 7, 17], hf.Sequence(20));
            }
            Assert.Equal(0, Preprocess("--input", input, "--output-prefix", Path.Combine(dir, "sp"), "--append-eod",
                "--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", model).Code);
            using (var sp = new IndexedDataset(Path.Combine(dir, "sp_text_document")))
                Assert.Equal([13L, 5, 15, 12, 14, 6, 10, 2], sp.Sequence(0));

            string output = Path.Combine(dir, "out");
            var (code, _, error) = ConsoleCapture.Run(RunCommand.Run,
                ["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "8", "--train-iters", "2",
                 "--micro-batch-size", "1", "--device", "cpu", "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", json,
                 "--data-path", Path.Combine(dir, "hf_text_document"), "--out", output]);
            Assert.True(code == 0, error);
            using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json")));
            Assert.Equal(128, summary.RootElement.GetProperty("Model").GetProperty("VocabSize").GetInt32());
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void TokenizerMistakesAreOneSentence()
    {
        string dir = Directory.CreateTempSubdirectory("harness-tok-").FullName;
        try
        {
            string input = Path.Combine(dir, "docs.txt");
            File.WriteAllText(input, "hello world\n");
            string json = Path.Combine(dir, "tokenizer.json");
            File.WriteAllText(json, """{"model": {"type": "WordPiece", "vocab": {}}}""");
            Assert.Equal((2, $"harness preprocess: {json} is not a tokenizer.json Harness reads: its model is WordPiece, and only BPE is read."),
                Preprocess("--input", input, "--output-prefix", Path.Combine(dir, "x"), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", json));
            File.WriteAllText(json, """{"model": {"type": "BPE", "byte_fallback": true, "vocab": {}}}""");
            Assert.StartsWith($"harness preprocess: {json} is not a tokenizer.json Harness reads: its BPE falls back to bytes",
                Preprocess("--input", input, "--output-prefix", Path.Combine(dir, "x"), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", json).Error);
            // A Split pattern in the tokenizers library's syntax that .NET's regular expressions do not read (a possessive quantifier).
            File.WriteAllText(json, """{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "a++"}, "behavior": "Isolated"}, {"type": "ByteLevel", "use_regex": false}]}}""");
            Assert.StartsWith($"harness preprocess: {json} is not a tokenizer.json Harness reads: its Split pattern a++ is not a regular expression .NET reads",
                Preprocess("--input", input, "--output-prefix", Path.Combine(dir, "x"), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", json).Error);
            string notAModel = Path.Combine(dir, "tokenizer.model");
            File.WriteAllText(notAModel, "not a protobuf");
            var (code, error) = Preprocess("--input", input, "--output-prefix", Path.Combine(dir, "x"), "--tokenizer-type", "Llama2Tokenizer", "--tokenizer-model", notAModel);
            Assert.Equal(2, code);
            Assert.StartsWith($"harness preprocess: {notAModel} is not a SentencePiece model Harness reads", error);
            // A tokenizer that names no end-of-document token cannot --append-eod.
            Gpt2Style(dir);
            File.Delete(Path.Combine(dir, "tokenizer_config.json"));
            Assert.Equal((2, "harness preprocess: --append-eod needs an end-of-document token, and the tokenizer names none."),
                Preprocess("--input", input, "--output-prefix", Path.Combine(dir, "x"), "--append-eod", "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", dir));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
