using System.Text;
using System.Text.Json;

namespace Harness.Executor.Data;

/// <summary>What a preprocessing run wrote.</summary>
public sealed record PreprocessResult(string Prefix, int Documents, long Tokens);

/// <summary>
/// Megatron's tools/preprocess_data.py in C#: documents in, an indexed dataset out per JSON key, named as Megatron names it
/// (PREFIX_KEY_document.bin/.idx), each document tokenized by the --tokenizer-type's tokenizer (<see cref="TextTokenizers"/>)
/// and, under --append-eod, followed by its end-of-document id. Input: JSON lines (one document per line, each key a string field), or plain text where blank lines
/// separate documents (one dataset, named by the first key). Each input must be UTF-8 (a byte that is not is refused, where
/// Python's default decoding in preprocess_data.py fails too, rather than replaced) and hold at least one document.
/// <paramref name="workers"/> documents are tokenized at once (--workers), their order kept.
/// </summary>
public static class Preprocessor
{
    /// <summary>Megatron's output name for one key: {prefix}_{key}_document (preprocess_data.py, level "document").</summary>
    public static string OutputPrefix(string prefix, string key) => $"{prefix}_{key}_document";

    /// <param name="tokenizer">Shared by the workers: every tokenizer here only reads its tables once built.</param>
    public static IReadOnlyList<PreprocessResult> Run(IReadOnlyList<string> inputs, string outputPrefix, IReadOnlyList<string> jsonKeys, bool appendEod,
        ITextTokenizer tokenizer, int workers = 1)
    {
        if (appendEod && tokenizer.EndOfDocument is null) throw new ArgumentException("--append-eod needs an end-of-document token, and the tokenizer names none.");
        var results = new List<PreprocessResult>();
        foreach (var key in jsonKeys)
        {
            string prefix = OutputPrefix(outputPrefix, key);
            using var builder = new IndexedDatasetBuilder(prefix, tokenizer.VocabSize);
            int documents = 0;
            long tokens = 0;
            foreach (var input in inputs)
            {
                int before = documents;
                var encoded = Documents(input, key).AsParallel().AsOrdered().WithDegreeOfParallelism(Math.Max(1, workers))
                    .Select(d => appendEod ? tokenizer.Encode(d).Append(tokenizer.EndOfDocument!.Value).ToArray() : tokenizer.Encode(d).ToArray());
                try
                {
                    foreach (var ids in encoded)
                    {
                        builder.Add(ids);
                        builder.EndDocument();
                        documents++;
                        tokens += ids.Length;
                    }
                }
                catch (AggregateException e) when (e.InnerExceptions.Count > 0)
                {
                    // A malformed line read by one of the workers: its own exception, not PLINQ's wrapper.
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
                }
                if (documents == before) throw new InvalidDataException($"--input '{input}' holds no document (it is empty or blank); give a file with text in it.");
            }
            builder.Finish();
            results.Add(new PreprocessResult(prefix, documents, tokens));
        }
        return results;
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
