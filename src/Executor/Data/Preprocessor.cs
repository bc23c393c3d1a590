using System.Text.Json;

namespace Harness.Executor.Data;

/// <summary>What a preprocessing run wrote.</summary>
public sealed record PreprocessResult(string Prefix, int Documents, long Tokens);

/// <summary>
/// Megatron's tools/preprocess_data.py in C#: documents in, PREFIX.bin/.idx out, each document tokenized with
/// GPT-2 BPE and followed by &lt;|endoftext|&gt; (--append-eod). Input: JSON lines (one document per line, text under
/// the key given, "text" by default), or plain text where blank lines separate documents.
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
            foreach (var document in Documents(input, jsonKey))
            {
                var ids = tokenizer.Encode(document).Append(Gpt2Tokenizer.EndOfText).ToArray();
                builder.Add(ids);
                builder.EndDocument();
                documents++;
                tokens += ids.Length;
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
            foreach (var text in File.ReadLines(path))
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
        foreach (var text in File.ReadLines(path))
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
}
