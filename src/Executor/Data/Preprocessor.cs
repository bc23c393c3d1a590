using System.Text;
using System.Text.Json;

namespace Harness.Executor.Data;

/// <summary>What a preprocessing run wrote.</summary>
public sealed record PreprocessResult(string Prefix, int Documents, long Tokens);

/// <summary>
/// Megatron's tools/preprocess_data.py in C#: documents in, PREFIX.bin/.idx out, each document tokenized with
/// GPT-2 BPE and followed by &lt;|endoftext|&gt; (--append-eod). Input: JSON lines (one document per line, text under
/// the key given, "text" by default), or plain text where blank lines separate documents. Each input must be UTF-8 (a byte
/// that is not is refused, where Python's default decoding in preprocess_data.py fails too, rather than replaced) and hold at
/// least one document.
/// </summary>
public static class Preprocessor
{
    public static PreprocessResult Run(IEnumerable<string> inputs, string outputPrefix, string jsonKey = "text")
    {
        var tokenizer = new Gpt2Tokenizer();
        using var builder = new IndexedDatasetBuilder(outputPrefix, Gpt2Tokenizer.VocabSize);
        int documents = 0;
        long tokens = 0;
        foreach (var input in inputs)
        {
            int before = documents;
            foreach (var document in Documents(input, jsonKey))
            {
                var ids = tokenizer.Encode(document).Append(Gpt2Tokenizer.EndOfText).ToArray();
                builder.Add(ids);
                builder.EndDocument();
                documents++;
                tokens += ids.Length;
            }
            if (documents == before) throw new InvalidDataException($"--input '{input}' holds no document (it is empty or blank); give a file with text in it.");
        }
        builder.Finish();
        return new PreprocessResult(outputPrefix, documents, tokens);
    }

    /// <summary>The documents of one input file; throws <see cref="InvalidDataException"/> on a malformed JSON line.</summary>
    public static IEnumerable<string> Documents(string path, string jsonKey)
    {
        if (path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            int line = 0;
            foreach (var text in Lines(path))
            {
                line++;
                if (string.IsNullOrWhiteSpace(text)) continue;
                string? document;
                try
                {
                    using var json = JsonDocument.Parse(text);
                    document = json.RootElement.TryGetProperty(jsonKey, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
                }
                catch (JsonException e) { throw new InvalidDataException($"{path} line {line} is not valid JSON ({e.Message})."); }
                yield return document ?? throw new InvalidDataException($"{path} line {line} has no string field \"{jsonKey}\" (--json-keys names it).");
            }
            yield break;
        }
        var paragraph = new List<string>();
        foreach (var text in Lines(path))
        {
            if (text.Trim().Length == 0)
            {
                if (paragraph.Count > 0) yield return string.Join('\n', paragraph);
                paragraph.Clear();
            }
            else paragraph.Add(text);
        }
        if (paragraph.Count > 0) yield return string.Join('\n', paragraph);
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The lines of <paramref name="path"/>, decoded as UTF-8; InvalidDataException at the first byte that is not.</summary>
    private static IEnumerable<string> Lines(string path)
    {
        using var reader = new StreamReader(path, StrictUtf8, detectEncodingFromByteOrderMarks: true);
        while (true)
        {
            string? line;
            try { line = reader.ReadLine(); }
            catch (DecoderFallbackException e)
            {
                string bytes = string.Join(' ', (e.BytesUnknown ?? []).Select(b => $"0x{b:X2}"));
                throw new InvalidDataException($"--input '{path}' is not UTF-8 (it holds the bytes {bytes}); convert it to UTF-8 (iconv -t UTF-8) first.");
            }
            if (line is null) yield break;
            yield return line;
        }
    }
}
