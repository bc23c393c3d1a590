using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Harness.Executor.Data;

/// <summary>
/// Megatron's HuggingFaceTokenizer (megatron/core/tokenizers/text/libraries/huggingface_tokenizer.py, NVIDIA/Megatron-LM
/// d98e8a6) for the byte-level BPE tokenizers of GPT-2, Llama 3, Qwen and their kind, read from the tokenizers library's
/// tokenizer.json: text_to_ids is tokenizer(text).input_ids (the post-processor's special tokens included), eod the id of
/// tokenizer_config.json's eos_token (the file beside tokenizer.json; none without it), vocab_size len(tokenizer): the
/// vocabulary with the added tokens.
/// Encoding follows the tokenizers library's pipeline (tokenizers/src/tokenizer/mod.rs and added_vocabulary.rs, models/bpe,
/// pre_tokenizers/byte_level.rs and split.rs, processors/template.rs): the added tokens are cut out of the text first
/// (leftmost, longest), each one id; the rest is normalized (NFC, NFD, NFKC, NFKD or none), split by the pre-tokenizer
/// (ByteLevel with GPT-2's regex, or Split on the file's regex with behavior Isolated before a ByteLevel that maps only), each
/// piece's UTF-8 bytes mapped to GPT-2's printable characters and merged by BPE, the adjacent pair of lowest merge rank
/// first (leftmost on a tie) until no pair has a rank (with ignore_merges a piece that is itself in the vocabulary is one
/// token); the template processor then puts its special tokens around the ids. Any other model, normalizer, pre-tokenizer
/// or post-processor is refused by name.
/// </summary>
public sealed class HuggingFaceTokenizer : ITextTokenizer
{
    public const string FileName = "tokenizer.json";
    private const string ConfigName = "tokenizer_config.json";

    /// <summary>GPT-2's pre-tokenization regex, ByteLevel's with use_regex (pre_tokenizers/byte_level.rs).</summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Dictionary<string, int> vocab;
    private readonly Dictionary<int, string> tokens;
    private readonly Dictionary<(string, string), int> ranks;
    private readonly (string Content, int Id)[] added;
    private readonly Regex[] splits;
    private readonly bool addPrefixSpace, ignoreMerges;
    private readonly NormalizationForm? normalization;
    private readonly int[] prefix, suffix;
    private readonly int? unknown;

    public int VocabSize { get; }
    public int? EndOfDocument { get; }

    private HuggingFaceTokenizer(Dictionary<string, int> vocab, Dictionary<(string, string), int> ranks, (string, int)[] added, Regex[] splits,
        bool addPrefixSpace, bool ignoreMerges, NormalizationForm? normalization, int[] prefix, int[] suffix, int? unknown, string? eos, string path)
    {
        (this.vocab, this.ranks, this.added, this.splits) = (vocab, ranks, added, splits);
        (this.addPrefixSpace, this.ignoreMerges, this.normalization, this.prefix, this.suffix, this.unknown) = (addPrefixSpace, ignoreMerges, normalization, prefix, suffix, unknown);
        tokens = new Dictionary<int, string>();
        foreach (var (token, id) in vocab) tokens[id] = token;
        foreach (var (content, id) in added) tokens[id] = content;
        VocabSize = vocab.Keys.Union(added.Select(a => a.Item1)).Count();
        if (eos is not null)
            EndOfDocument = Id(eos) ?? throw new InvalidDataException($"{path}: its eos_token '{eos}' is not in the vocabulary.");
    }

    private int? Id(string token) =>
        added.FirstOrDefault(a => a.Content == token) is { Content: not null } a ? a.Id : vocab.TryGetValue(token, out int id) ? id : null;

    /// <summary>Reads <paramref name="path"/> (a tokenizer.json, or the folder holding one, and the tokenizer_config.json beside it);
    /// throws InvalidDataException naming what it cannot read.</summary>
    public static HuggingFaceTokenizer Load(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, FileName) : path;
        InvalidDataException Fail(string why) => new($"{file} is not a tokenizer.json Harness reads: {why}.");
        // A field of the wrong JSON kind, or a template naming a special token it does not list.
        try { return Read(file, Fail); }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw Fail($"it is malformed ({e.Message.TrimEnd('.')})");
        }
    }

    /// <summary>A Split pre-tokenizer's regular expression as .NET reads it: the tokenizers library's Oniguruma syntax is read
    /// where .NET's agrees (possessive quantifiers, for one, it does not); one sentence where it does not.</summary>
    private static Regex Pattern(string regex, Func<string, InvalidDataException> Fail)
    {
        try { return new Regex(regex, RegexOptions.CultureInvariant); }
        catch (ArgumentException e) { throw Fail($"its Split pattern {regex} is not a regular expression .NET reads ({e.Message.TrimEnd('.')})"); }
    }

    private static HuggingFaceTokenizer Read(string file, Func<string, InvalidDataException> Fail)
    {
        JsonElement root;
        try { root = JsonDocument.Parse(File.ReadAllText(file)).RootElement; }
        catch (JsonException e) { throw Fail($"it is not JSON ({e.Message})"); }
        static string? Type(JsonElement e) => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) ? Str(t) : null;
        JsonElement Get(JsonElement e, string name) => e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) ? v : default;

        var model = Get(root, "model");
        if (Type(model) != "BPE") throw Fail($"its model is {Type(model) ?? "missing"}, and only BPE is read");
        if (Get(model, "byte_fallback").ValueKind == JsonValueKind.True)
            throw Fail("its BPE falls back to bytes (a SentencePiece-style tokenizer); use --tokenizer-type GPTSentencePieceTokenizer with its tokenizer.model");
        foreach (var affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (Str(Get(model, affix)) is { Length: > 0 } a) throw Fail($"its BPE has the {affix} '{a}', which byte-level BPE does not use");
        var vocab = new Dictionary<string, int>();
        if (Get(model, "vocab").ValueKind != JsonValueKind.Object) throw Fail("its model has no vocab");
        foreach (var p in Get(model, "vocab").EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        var ranks = new Dictionary<(string, string), int>();
        int rank = 0;
        foreach (var m in Get(model, "merges").ValueKind == JsonValueKind.Array ? Get(model, "merges").EnumerateArray() : default)
        {
            // "a b" in files before tokenizers 0.20, ["a", "b"] after.
            var pair = m.ValueKind == JsonValueKind.Array ? m.EnumerateArray().Select(x => x.GetString()!).ToArray() : m.GetString()!.Split(' ');
            if (pair.Length != 2) throw Fail($"merge {rank} is not a pair of tokens");
            ranks.TryAdd((pair[0], pair[1]), rank++);
        }
        int? unknown = Str(Get(model, "unk_token")) is string unk && vocab.TryGetValue(unk, out int u) ? u : null;

        var added = Get(root, "added_tokens").ValueKind == JsonValueKind.Array
            ? Get(root, "added_tokens").EnumerateArray().Select(t => (Str(Get(t, "content"))!, Get(t, "id").GetInt32())).ToArray() : [];

        NormalizationForm? normalization = Type(Get(root, "normalizer")) switch
        {
            null => null,
            "NFC" => NormalizationForm.FormC,
            "NFD" => NormalizationForm.FormD,
            "NFKC" => NormalizationForm.FormKC,
            "NFKD" => NormalizationForm.FormKD,
            var other => throw Fail($"its normalizer is {other}; only NFC, NFD, NFKC, NFKD or none are read"),
        };

        var pre = Get(root, "pre_tokenizer");
        var steps = Type(pre) == "Sequence" ? Get(pre, "pretokenizers").EnumerateArray().ToList() : [pre];
        var splits = new List<Regex>();
        bool byteLevel = false, addPrefixSpace = false;
        foreach (var step in steps)
        {
            if (byteLevel) throw Fail("its pre-tokenizer has steps after ByteLevel");
            switch (Type(step))
            {
                case "ByteLevel":
                    byteLevel = true;
                    addPrefixSpace = Get(step, "add_prefix_space").ValueKind == JsonValueKind.True;
                    if (Get(step, "use_regex").ValueKind != JsonValueKind.False) splits.Add(new Regex(Gpt2Pattern, RegexOptions.CultureInvariant));
                    break;
                case "Split":
                    if (Str(Get(step, "behavior")) != "Isolated" || Get(step, "invert").ValueKind == JsonValueKind.True)
                        throw Fail($"its Split pre-tokenizer's behavior is {Str(Get(step, "behavior"))}{(Get(step, "invert").ValueKind == JsonValueKind.True ? " inverted" : "")}; only Isolated is read");
                    var pattern = Get(step, "pattern");
                    splits.Add(Str(Get(pattern, "Regex")) is string regex ? Pattern(regex, Fail)
                        : new Regex(Regex.Escape(Str(Get(pattern, "String")) ?? throw Fail("its Split pre-tokenizer has no pattern")), RegexOptions.CultureInvariant));
                    break;
                default:
                    throw Fail($"its pre-tokenizer {Type(step) ?? "is missing and"} is not byte-level (ByteLevel, or Split then ByteLevel)");
            }
        }
        if (!byteLevel) throw Fail("its pre-tokenizer has no ByteLevel step, so its BPE is not byte-level");

        var (prefix, suffix) = Template(Get(root, "post_processor"), Fail);
        string? eos = null;
        string config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(file))!, ConfigName);
        if (File.Exists(config))
        {
            try
            {
                var e = Get(JsonDocument.Parse(File.ReadAllText(config)).RootElement, "eos_token");
                eos = e.ValueKind == JsonValueKind.String ? e.GetString() : e.ValueKind == JsonValueKind.Object ? Str(Get(e, "content")) : null;
            }
            catch (JsonException ex) { throw new InvalidDataException($"{config} is not JSON ({ex.Message})."); }
        }
        return new HuggingFaceTokenizer(vocab, ranks, added, [.. splits], addPrefixSpace, Get(model, "ignore_merges").ValueKind == JsonValueKind.True,
            normalization, prefix, suffix, unknown, eos, file);
    }

    private static string? Str(JsonElement e) => e.ValueKind == JsonValueKind.String ? e.GetString() : null;

    /// <summary>The ids a post-processor puts before and after a single sequence: TemplateProcessing's "single" template
    /// (processors/template.rs), ByteLevel's none, a Sequence's in turn.</summary>
    private static (int[] Prefix, int[] Suffix) Template(JsonElement processor, Func<string, InvalidDataException> fail)
    {
        if (processor.ValueKind != JsonValueKind.Object) return ([], []);
        string? type = processor.GetProperty("type").GetString();
        switch (type)
        {
            case "ByteLevel":
                return ([], []);
            case "Sequence":
                var parts = processor.GetProperty("processors").EnumerateArray().Select(p => Template(p, fail)).ToList();
                return (parts.SelectMany(p => p.Prefix).ToArray(), parts.SelectMany(p => p.Suffix).ToArray());
            case "TemplateProcessing":
                var special = processor.GetProperty("special_tokens");
                List<int> before = [], after = [];
                bool seen = false;
                foreach (var item in processor.GetProperty("single").EnumerateArray())
                {
                    if (item.TryGetProperty("Sequence", out _)) { seen = true; continue; }
                    string id = item.GetProperty("SpecialToken").GetProperty("id").GetString()!;
                    var ids = special.GetProperty(id).GetProperty("ids").EnumerateArray().Select(x => x.GetInt32());
                    (seen ? after : before).AddRange(ids);
                }
                return ([.. before], [.. after]);
            default:
                throw fail($"its post-processor is {type}; only TemplateProcessing, ByteLevel or a Sequence of them are read");
        }
    }

    public IReadOnlyList<int> Encode(string text)
    {
        var ids = new List<int>(prefix);
        int at = 0;
        while (at < text.Length)
        {
            // The next added token: leftmost, then longest.
            int next = text.Length, length = 0, id = 0;
            foreach (var (content, tokenId) in added)
            {
                if (content.Length == 0) continue;
                int i = text.IndexOf(content, at, StringComparison.Ordinal);
                if (i >= 0 && (i < next || (i == next && content.Length > length))) (next, length, id) = (i, content.Length, tokenId);
            }
            if (next > at) EncodeText(text[at..next], ids);
            if (length == 0) break;
            ids.Add(id);
            at = next + length;
        }
        ids.AddRange(suffix);
        return ids;
    }

    private void EncodeText(string text, List<int> ids)
    {
        if (normalization is { } form) text = text.Normalize(form);
        if (addPrefixSpace && !text.StartsWith(' ')) text = " " + text;
        IEnumerable<string> pieces = [text];
        foreach (var split in splits) pieces = pieces.SelectMany(p => Isolated(split, p));
        foreach (var piece in pieces)
        {
            string mapped = ByteLevel.Encode(piece);
            if (ignoreMerges && vocab.TryGetValue(mapped, out int whole)) { ids.Add(whole); continue; }
            foreach (var symbol in Merge(mapped))
                ids.Add(vocab.TryGetValue(symbol, out int id) ? id
                    : unknown ?? throw new InvalidDataException($"the tokenizer's vocabulary has no token '{symbol}' and no unk_token to stand for it."));
        }
    }

    /// <summary>Split's Isolated behavior: every match a piece, and the text between matches too.</summary>
    private static IEnumerable<string> Isolated(Regex regex, string text)
    {
        int at = 0;
        foreach (Match m in regex.Matches(text))
        {
            if (m.Length == 0) continue;
            if (m.Index > at) yield return text[at..m.Index];
            yield return m.Value;
            at = m.Index + m.Length;
        }
        if (at < text.Length) yield return text[at..];
    }

    private List<string> Merge(string word)
    {
        var symbols = word.Select(c => c.ToString()).ToList();
        while (symbols.Count > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (ranks.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < bestRank) (best, bestRank) = (i, r);
            if (best < 0) break;
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }
        return symbols;
    }

    /// <summary>The ByteLevel decoder: each token's characters back to their bytes (a token with a character outside the map,
    /// an added token's text, as its own UTF-8), the bytes read as UTF-8 with replacement characters.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (!tokens.TryGetValue(id, out var token)) throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is not in the tokenizer's vocabulary");
            bytes.AddRange(ByteLevel.Decode(token) ?? Encoding.UTF8.GetBytes(token));
        }
        return Encoding.UTF8.GetString([.. bytes]);
    }
}

/// <summary>GPT-2's map of bytes to printable characters (bytes_to_unicode in openai/gpt-2 encoder.py, tokenizers'
/// pre_tokenizers/byte_level.rs): the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other
/// 68 for U+0100 on in byte order, so a space is 'Ġ' (U+0120).</summary>
internal static class ByteLevel
{
    private static readonly char[] ToChar = BuildMap();
    private static readonly Dictionary<char, byte> ToByte = Enumerable.Range(0, 256).ToDictionary(b => ToChar[b], b => (byte)b);

    private static char[] BuildMap()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            map[b] = b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ' ? (char)b : (char)next++;
        return map;
    }

    public static string Encode(string text) => new(Encoding.UTF8.GetBytes(text).Select(b => ToChar[b]).ToArray());

    /// <summary>The bytes <paramref name="token"/>'s characters stand for; null when one stands for none.</summary>
    public static byte[]? Decode(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!ToByte.TryGetValue(token[i], out bytes[i])) return null;
        }
        return bytes;
    }
}
