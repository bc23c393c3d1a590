using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Harness.Simulator.Specs;

/// <summary>
/// Megatron-LM's --data-path (and --train-data-path, --valid-data-path, --test-data-path): the datasets a run samples from, as
/// Megatron reads the list (megatron/core/datasets/utils.py get_blend_from_list, NVIDIA/Megatron-LM d98e8a6): one prefix;
/// weight-prefix pairs "W1 PREFIX1 W2 PREFIX2 ..." (<see cref="Weights"/> as given, normalized where they are used); or
/// prefixes alone, whose weights are then the datasets' own sizes (null <see cref="Weights"/>).
/// </summary>
[JsonConverter(typeof(DataBlendJson))]
public sealed record DataBlend(IReadOnlyList<string> Prefixes, IReadOnlyList<double>? Weights)
{
    public static DataBlend Single(string prefix) => new([prefix], null);

    /// <summary>The blend the words of <paramref name="flag"/> give, or the one sentence saying why they give none: a list
    /// that is neither pairs nor prefixes alone, or a weight that is not above 0 (Megatron's BlendedDataset asserts every
    /// weight is positive).</summary>
    public static (DataBlend? Blend, string? Problem) Parse(string flag, IReadOnlyList<string> words)
    {
        if (words.Count == 0) return (null, $"{flag} needs a dataset prefix, or weight-prefix pairs (W1 PREFIX1 W2 PREFIX2 ...).");
        static bool IsNumber(string w) => double.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
        string text = string.Join(' ', words);
        bool pairs = words.Count % 2 == 0 && Enumerable.Range(0, words.Count / 2).All(i => IsNumber(words[2 * i]));
        if (!pairs)
            return words.Any(IsNumber)
                ? (null, $"{flag} '{text}' is neither weight-prefix pairs (W1 PREFIX1 W2 PREFIX2 ...) nor a list of prefixes.")
                : (new DataBlend(words.ToArray(), null), null);
        var weights = new double[words.Count / 2];
        var prefixes = new string[words.Count / 2];
        for (int i = 0; i < weights.Length; i++)
        {
            weights[i] = double.Parse(words[2 * i], NumberStyles.Float, CultureInfo.InvariantCulture);
            prefixes[i] = words[2 * i + 1];
            if (!(double.IsFinite(weights[i]) && weights[i] > 0))
                return (null, $"{flag} gives {prefixes[i]} the weight {words[2 * i]}; a weight is a finite number above 0.");
        }
        return (new DataBlend(prefixes, weights), null);
    }

    /// <summary>The list back as Megatron takes it.</summary>
    public IReadOnlyList<string> Words() => Weights is null ? Prefixes
        : Prefixes.SelectMany((p, i) => new[] { Weights[i].ToString("R", CultureInfo.InvariantCulture), p }).ToArray();

    public override string ToString() => string.Join(' ', Words());

    public bool Equals(DataBlend? other) =>
        other is not null && Prefixes.SequenceEqual(other.Prefixes)
        && (Weights is null ? other.Weights is null : other.Weights is not null && Weights.SequenceEqual(other.Weights));

    public override int GetHashCode() => ToString().GetHashCode(StringComparison.Ordinal);
}

/// <summary>A blend in summary.json as the words Megatron takes (["0.3", "a_text_document", "0.7", "b_text_document"]); a plain
/// string, as records before blends wrote --data-path, reads as that one prefix.</summary>
public sealed class DataBlendJson : JsonConverter<DataBlend>
{
    public override DataBlend? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String) return DataBlend.Single(reader.GetString()!);
        var words = JsonSerializer.Deserialize<string[]>(ref reader, options) ?? [];
        var (blend, problem) = DataBlend.Parse("the record's data path", words);
        return blend ?? throw new JsonException(problem);
    }

    public override void Write(Utf8JsonWriter writer, DataBlend value, JsonSerializerOptions options) =>
        JsonSerializer.Serialize(writer, value.Words(), options);
}
