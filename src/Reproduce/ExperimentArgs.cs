using System.Text.Json;
using System.Text.Json.Serialization;

namespace Harness.Reproduce;

/// <summary>
/// A row's (or a table's default) launch arguments, as an experiment file writes them: Megatron-LM's flag names without
/// the dashes, a switch as true, a value as itself (<c>"tensor-model-parallel-size": 2, "sequence-parallel": true</c>).
/// They are read by the same codec as a command line (<see cref="Harness.Megatron.RunDescriptionFlags"/>).
/// </summary>
[JsonConverter(typeof(ExperimentArgsConverter))]
public sealed class ExperimentArgs(IReadOnlyDictionary<string, JsonElement> values)
{
    private IReadOnlyDictionary<string, JsonElement> Values { get; } = values;

    public static ExperimentArgs None { get; } = new(new Dictionary<string, JsonElement>());

    /// <summary>Whether the arguments set this flag (named without dashes).</summary>
    public bool Sets(string name) => Values.ContainsKey(name);

    /// <summary>These arguments with every one <paramref name="over"/> sets replaced (a row over its table's defaults).</summary>
    public ExperimentArgs Over(ExperimentArgs? over)
    {
        if (over is null) return this;
        var merged = new Dictionary<string, JsonElement>(Values);
        foreach (var (k, v) in over.Values) merged[k] = v;
        return new ExperimentArgs(merged);
    }

    /// <summary>These arguments without the flags named (left to the reproduction to choose).</summary>
    public ExperimentArgs Without(params string[] names) =>
        new(Values.Where(kv => !names.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value));

    /// <summary>The arguments as a command line: a true switch as its flag, a false one left out, a value after its flag.</summary>
    public string[] ToCommandLine() => Values.SelectMany(kv => kv.Value.ValueKind switch
    {
        JsonValueKind.True => new[] { "--" + kv.Key },
        JsonValueKind.False => [],
        JsonValueKind.String => ["--" + kv.Key, kv.Value.GetString()!],
        _ => ["--" + kv.Key, kv.Value.GetRawText()],
    }).ToArray();

    private sealed class ExperimentArgsConverter : JsonConverter<ExperimentArgs>
    {
        public override ExperimentArgs Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            new(JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(ref reader, options)
                ?? throw new JsonException("experiment arguments must be a JSON object of flag names"));

        public override void Write(Utf8JsonWriter writer, ExperimentArgs value, JsonSerializerOptions options) =>
            JsonSerializer.Serialize(writer, value.Values, options);
    }

    public override string ToString() => string.Join(' ', ToCommandLine());
}
