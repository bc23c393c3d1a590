using System.Collections;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Harness.Simulator.Specs;

/// <summary>
/// What is wrong with a JSON file, as one clause a user reads: where (line, field) and what the field takes. System.Text.Json's
/// own messages speak to the program's author (".NET member", "nullability annotation", "isFinalBlock", the target's type
/// name, a second sentence and the reader's position suffix); each kind it raises is restated here, the rest cut to their
/// first sentence.
/// </summary>
public static partial class JsonFileProblem
{
    /// <summary>" (line N, at $.path): what is wrong" for a file read as <paramref name="target"/>.</summary>
    public static string Describe(JsonException e, Type target)
    {
        var where = new List<string>();
        if (e.LineNumber is long line) where.Add($"line {line + 1}");
        if (e.Path is string path && path != "$") where.Add($"at {path}");
        return (where.Count > 0 ? $" ({string.Join(", ", where)})" : "") + ": " + What(e, target);
    }

    private static string What(JsonException e, Type target)
    {
        string message = e.Message;
        if (message.Contains("does not contain any JSON tokens", StringComparison.Ordinal)) return "the file holds no JSON.";
        if (MissingFields().Match(message) is { Success: true } missing)
            return $"required fields are missing: {missing.Groups[1].Value}.";
        if (UnknownField().Match(message) is { Success: true } unknown)
            return $"'{unknown.Groups[1].Value}' is not a field here; check its spelling.";
        string field = e.Path is string p && p != "$" ? Index().Replace(p[(p.LastIndexOf('.') + 1)..], "") : "";
        if (NullField().IsMatch(message) && field.Length > 0) return $"{field} must not be null.";
        if (message.StartsWith("The JSON value could not be converted to", StringComparison.Ordinal))
            return field.Length > 0 && FieldType(target, e.Path!) is Type type ? $"{field} takes {Kind(type)}." : "the file must hold one JSON object.";
        // A reader's complaint ("'b' is an invalid start of a property name. Expected a '"'."): its first sentence.
        int end = message.IndexOf(". ", StringComparison.Ordinal);
        return (end > 0 ? message[..end] : message.TrimEnd('.')) + ".";
    }

    /// <summary>The type of the field a JSON path ($.gpu.efficiency.gemm, $.rows[2].args) names, property by property.</summary>
    private static Type? FieldType(Type root, string path)
    {
        Type? type = root;
        foreach (var segment in path.TrimStart('$').Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            string name = Index().Replace(segment, "");
            var property = type?.GetProperties().FirstOrDefault(p => string.Equals(JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name), name, StringComparison.OrdinalIgnoreCase)
                                                                    || string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase));
            type = property is null ? null : Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            if (type is not null && segment.EndsWith(']') && Element(type) is Type element) type = element;
        }
        return type;
    }

    private static Type? Element(Type list) =>
        list.IsArray ? list.GetElementType()
        : list.IsGenericType && typeof(IEnumerable).IsAssignableFrom(list) ? list.GetGenericArguments()[^1] : null;

    /// <summary>What a value of <paramref name="t"/> is written as.</summary>
    private static string Kind(Type t) => t switch
    {
        _ when t == typeof(int) => $"an integer up to {int.MaxValue}",
        _ when t == typeof(long) => "an integer",
        _ when t == typeof(double) || t == typeof(float) => "a number",
        _ when t == typeof(bool) => "true or false",
        _ when t == typeof(string) => "a string",
        { IsEnum: true } => $"one of {string.Join(", ", Enum.GetNames(t).Select(JsonNamingPolicy.SnakeCaseLower.ConvertName))}",
        _ when Element(t) is not null => "a list",
        _ => "an object",
    };

    [GeneratedRegex(@"missing required properties including: ('[^']*'(?:, '[^']*')*)")]
    private static partial Regex MissingFields();

    [GeneratedRegex(@"The JSON property '([^']*)' could not be mapped")]
    private static partial Regex UnknownField();

    [GeneratedRegex(@"doesn't allow null values")]
    private static partial Regex NullField();

    [GeneratedRegex(@"\[\d+\]")]
    private static partial Regex Index();
}
