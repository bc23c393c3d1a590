using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Harness.Executor.Training.Interchange;

/// <summary>
/// The safetensors file format (huggingface/safetensors, its README's "Format" section): an unsigned 64-bit little-endian
/// header length N, N bytes of UTF-8 JSON mapping each tensor's name to {"dtype", "shape", "data_offsets": [begin, end]}
/// (byte offsets into the data that follows the header) plus an optional "__metadata__" map of strings, then the tensors'
/// raw little-endian bytes, row-major. The writer pads the header with spaces to a multiple of 8 bytes, as the reference
/// implementation does, so every tensor starts aligned. Written and read here: nothing of another project's code.
/// </summary>
public static class SafeTensors
{
    private const string MetadataKey = "__metadata__";

    /// <summary>The safetensors names of the dtypes read and written, with their libtorch types.</summary>
    private static readonly (string Name, ScalarType Type)[] Dtypes =
        [("F64", ScalarType.Float64), ("F32", ScalarType.Float32), ("F16", ScalarType.Float16), ("BF16", ScalarType.BFloat16), ("I64", ScalarType.Int64)];

    /// <summary>Writes the tensors (any device; each as it is, contiguous) in the given order with the metadata.</summary>
    public static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        if (metadata is not null) header[MetadataKey] = new JsonObject(metadata.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
        long offset = 0;
        foreach (var (name, t) in tensors)
        {
            long bytes = t.numel() * t.element_size();
            header[name] = new JsonObject
            {
                ["dtype"] = NameOf(t.dtype),
                ["shape"] = new JsonArray(t.shape.Select(d => (JsonNode?)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var file = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        file.Write(length);
        file.Write(json);
        for (int i = json.Length; i < padded; i++) file.WriteByte((byte)' ');
        foreach (var (_, t) in tensors)
        {
            // The contiguous copy is the scope's until reshape returns (a bare temporary can be finalized mid-call).
            using var scope = NewDisposeScope();
            var flat = t.contiguous().reshape(-1);
            for (long at = 0; at < flat.numel(); at += ChunkElements)
            {
                using var part = flat.narrow(0, at, Math.Min(ChunkElements, flat.numel() - at)).cpu();
                file.Write(part.bytes);
            }
        }
    }

    /// <summary>Elements moved between a file and a tensor at once: memory stays bounded and no array nears 2 GB (as <see cref="Checkpoint"/>'s files).</summary>
    private const long ChunkElements = 1 << 24;

    /// <summary>The tensors of a safetensors file, by name in the header's order, on the CPU in their stored dtype, and its metadata.
    /// Throws InvalidDataException naming what is wrong with the file.</summary>
    public static (IReadOnlyList<(string Name, Tensor Tensor)> Tensors, IReadOnlyDictionary<string, string> Metadata) Read(string path)
    {
        using var file = File.OpenRead(path);
        Span<byte> length = stackalloc byte[8];
        if (file.Read(length) != 8) throw Damaged(path, "it is shorter than the 8-byte header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(length);
        if (headerLength > (ulong)(file.Length - 8) || headerLength > int.MaxValue)
            throw Damaged(path, $"its header length {headerLength} runs past the file's {file.Length} bytes");
        var json = new byte[headerLength];
        file.ReadExactly(json);
        JsonObject header;
        try { header = JsonNode.Parse(json)?.AsObject() ?? throw Damaged(path, "its header is not a JSON object"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { throw Damaged(path, "its header is not a JSON object"); }
        long dataStart = 8 + (long)headerLength, dataLength = file.Length - dataStart;
        var metadata = new Dictionary<string, string>();
        var tensors = new List<(string, Tensor)>();
        foreach (var (name, node) in header)
        {
            if (name == MetadataKey)
            {
                foreach (var (key, value) in node?.AsObject() ?? [])
                    metadata[key] = value?.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : throw Damaged(path, $"its metadata '{key}' is not a string");
                continue;
            }
            var (type, shape, begin, end) = Entry(path, name, node);
            long elementSize = ElementSize(type), expected = shape.Aggregate(1L, (a, d) => a * d) * elementSize;
            if (begin < 0 || end < begin || end > dataLength || end - begin != expected)
                throw Damaged(path, $"tensor '{name}' has data_offsets [{begin}, {end}], not {expected} bytes inside its {dataLength} bytes of data");
            var t = empty(shape, dtype: type);
            using var flat = t.view(-1);
            file.Position = dataStart + begin;
            for (long at = 0; at < flat.numel(); at += ChunkElements)
            {
                long n = Math.Min(ChunkElements, flat.numel() - at);
                var bytes = new byte[n * elementSize];
                file.ReadExactly(bytes);
                using var part = empty(n, dtype: type);
                part.bytes = bytes;
                using var target = flat.narrow(0, at, n); // held until copy_ returns
                target.copy_(part);
            }
            tensors.Add((name, t));
        }
        return (tensors, metadata);
    }

    private static (ScalarType Type, long[] Shape, long Begin, long End) Entry(string path, string name, JsonNode? node)
    {
        try
        {
            var o = node!.AsObject();
            string dtype = o["dtype"]!.GetValue<string>();
            var type = Dtypes.FirstOrDefault(d => d.Name == dtype) is { Name: not null } known ? known.Type
                : throw Damaged(path, $"tensor '{name}' is {dtype}; valid: {string.Join(", ", Dtypes.Select(d => d.Name))}");
            var shape = o["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
            if (shape.Any(d => d < 0)) throw Damaged(path, $"tensor '{name}' has a negative dimension");
            var offsets = o["data_offsets"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
            if (offsets.Length != 2) throw Damaged(path, $"tensor '{name}' has {offsets.Length} data_offsets, not 2");
            return (type, shape, offsets[0], offsets[1]);
        }
        catch (Exception e) when (e is InvalidOperationException or NullReferenceException or FormatException)
        {
            throw Damaged(path, $"tensor '{name}' lacks a dtype, shape or data_offsets of the right kind");
        }
    }

    private static string NameOf(ScalarType type) =>
        Dtypes.FirstOrDefault(d => d.Type == type) is { Name: not null } known ? known.Name
            : throw new ArgumentException($"safetensors here holds {string.Join(", ", Dtypes.Select(d => d.Type))}, not {type}.");

    private static long ElementSize(ScalarType type) => type switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 => 4,
        _ => 2,
    };

    private static InvalidDataException Damaged(string path, string what) => new($"{path} is not a safetensors file: {what}.");
}
