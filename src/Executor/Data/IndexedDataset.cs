using System.IO.MemoryMappedFiles;
using System.Text;

namespace Harness.Executor.Data;

/// <summary>Element types of Megatron's indexed dataset, by the code stored in the .idx header (DType in indexed_dataset.py).</summary>
public enum IndexedDtype : byte { UInt8 = 1, Int8 = 2, Int16 = 3, Int32 = 4, Int64 = 5, Float64 = 6, Float32 = 7, UInt16 = 8 }

/// <summary>A stream of token ids (a dataset's .bin, or synthetic tokens), read by absolute token offset.</summary>
public interface ITokenSource
{
    long TokenCount { get; }

    /// <summary>Copies tokens [offset, offset + destination.Length) into destination.</summary>
    void Read(long offset, Span<long> destination);
}

/// <summary>
/// Reader of Megatron-LM's MMapIndexedDataset (megatron/core/datasets/indexed_dataset.py), so data preprocessed
/// for Megatron-LM trains here unchanged. PREFIX.idx, little-endian:
///   9 bytes magic "MMIDIDX\0\0" | u64 version = 1 | u8 dtype code | u64 sequence count N | u64 document count D |
///   i32 sizes[N] (tokens per sequence) | i64 pointers[N] (byte offset of each sequence in .bin) | i64 document_indices[D]
/// PREFIX.bin holds the sequences' tokens back to back. Sequences are read here as one concatenated stream, as
/// GPTDataset does when it builds samples across document boundaries.
/// </summary>
public sealed class IndexedDataset : ITokenSource, IDisposable
{
    public static ReadOnlySpan<byte> Magic => "MMIDIDX\0\0"u8;
    public const ulong Version = 1;

    private readonly MemoryMappedFile? map;
    private readonly MemoryMappedViewAccessor? view;

    public string Prefix { get; }
    public IndexedDtype Dtype { get; }
    public int[] Sizes { get; }
    public long[] Pointers { get; }
    public long[] DocumentIndices { get; }
    public long TokenCount { get; }
    public int ElementSize { get; }

    /// <summary>Opens PREFIX.idx and PREFIX.bin; throws <see cref="InvalidDataException"/> naming what is wrong.</summary>
    public IndexedDataset(string prefix)
    {
        Prefix = prefix;
        string idx = prefix + ".idx", bin = prefix + ".bin";
        if (!File.Exists(idx)) throw new FileNotFoundException($"{idx} does not exist (--data-path takes the prefix of a .bin/.idx pair).", idx);
        if (!File.Exists(bin)) throw new FileNotFoundException($"{bin} does not exist (--data-path takes the prefix of a .bin/.idx pair).", bin);
        using (var reader = new BinaryReader(File.OpenRead(idx)))
        {
            var fail = (string why) => new InvalidDataException($"{idx} is not a Megatron indexed dataset index: {why}.");
            long length = reader.BaseStream.Length;
            if (length < 34 || !reader.ReadBytes(9).AsSpan().SequenceEqual(Magic)) throw fail("its first 9 bytes are not MMIDIDX\\0\\0");
            ulong version = reader.ReadUInt64();
            if (version != Version) throw fail($"version {version}, only version 1 is known");
            byte code = reader.ReadByte();
            if (!Enum.IsDefined(typeof(IndexedDtype), code)) throw fail($"dtype code {code} is not one of 1..8");
            Dtype = (IndexedDtype)code;
            ElementSize = SizeOf(Dtype);
            ulong n = reader.ReadUInt64(), d = reader.ReadUInt64();
            if (34 + 12 * (decimal)n + 8 * (decimal)d != length)
                throw fail($"{n} sequences and {d} document indices need {34 + 12 * (decimal)n + 8 * (decimal)d} bytes, the file has {length}");
            Sizes = new int[n];
            Pointers = new long[n];
            DocumentIndices = new long[d];
            for (ulong i = 0; i < n; i++) Sizes[i] = reader.ReadInt32();
            for (ulong i = 0; i < n; i++) Pointers[i] = reader.ReadInt64();
            for (ulong i = 0; i < d; i++) DocumentIndices[i] = reader.ReadInt64();
            long expected = 0;
            for (int i = 0; i < Sizes.Length; i++)
            {
                if (Sizes[i] < 0 || Pointers[i] != expected)
                    throw fail($"sequence {i} starts at byte {Pointers[i]}, expected {expected} (sequences must be contiguous)");
                expected += (long)Sizes[i] * ElementSize;
            }
            long binLength = new FileInfo(bin).Length;
            if (expected != binLength) throw fail($"its sequences cover {expected} bytes but {bin} has {binLength}");
            TokenCount = expected / ElementSize;
        }
        if (TokenCount > 0)
        {
            map = MemoryMappedFile.CreateFromFile(bin, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        }
    }

    public static int SizeOf(IndexedDtype dtype) => dtype switch
    {
        IndexedDtype.UInt8 or IndexedDtype.Int8 => 1,
        IndexedDtype.Int16 or IndexedDtype.UInt16 => 2,
        IndexedDtype.Int32 or IndexedDtype.Float32 => 4,
        _ => 8,
    };

    public void Read(long offset, Span<long> destination)
    {
        if (offset < 0 || offset + destination.Length > TokenCount)
            throw new ArgumentOutOfRangeException(nameof(offset), $"tokens [{offset}, {offset + destination.Length}) lie outside the dataset's {TokenCount}");
        for (int i = 0; i < destination.Length; i++)
        {
            long at = (offset + i) * ElementSize;
            destination[i] = Dtype switch
            {
                IndexedDtype.UInt8 => view!.ReadByte(at),
                IndexedDtype.Int8 => view!.ReadSByte(at),
                IndexedDtype.Int16 => view!.ReadInt16(at),
                IndexedDtype.UInt16 => view!.ReadUInt16(at),
                IndexedDtype.Int32 => view!.ReadInt32(at),
                IndexedDtype.Int64 => view!.ReadInt64(at),
                IndexedDtype.Float32 => (long)view!.ReadSingle(at),
                _ => (long)view!.ReadDouble(at),
            };
        }
    }

    /// <summary>The tokens of sequence i.</summary>
    public long[] Sequence(int i)
    {
        var tokens = new long[Sizes[i]];
        Read(Pointers[i] / ElementSize, tokens);
        return tokens;
    }

    public void Dispose()
    {
        view?.Dispose();
        map?.Dispose();
    }
}
