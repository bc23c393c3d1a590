namespace Harness.Executor.Data;

/// <summary>
/// Writer of Megatron's indexed dataset (the layout <see cref="IndexedDataset"/> documents): one sequence per
/// <see cref="Add"/>, a document boundary per <see cref="EndDocument"/>, the .idx written by <see cref="Finish"/>.
/// As Megatron's best_fitting_dtype: uint16 tokens when the vocabulary fits under 65500, else int32.
/// </summary>
public sealed class IndexedDatasetBuilder : IDisposable
{
    private readonly string prefix;
    private readonly FileStream bin;
    private readonly List<int> sizes = new();
    private readonly List<long> documentIndices = new() { 0 };
    public IndexedDtype Dtype { get; }

    public IndexedDatasetBuilder(string prefix, long vocabSize)
    {
        this.prefix = prefix;
        Dtype = vocabSize < 65500 ? IndexedDtype.UInt16 : IndexedDtype.Int32;
        var dir = Path.GetDirectoryName(Path.GetFullPath(prefix));
        if (dir is not null) Directory.CreateDirectory(dir);
        bin = File.Create(prefix + ".bin");
    }

    /// <summary>Appends one sequence of token ids.</summary>
    public void Add(ReadOnlySpan<int> tokens)
    {
        var bytes = new byte[tokens.Length * IndexedDataset.SizeOf(Dtype)];
        for (int i = 0; i < tokens.Length; i++)
        {
            if (Dtype == IndexedDtype.UInt16) BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), checked((ushort)tokens[i]));
            else BitConverter.TryWriteBytes(bytes.AsSpan(4 * i), tokens[i]);
        }
        bin.Write(bytes);
        sizes.Add(tokens.Length);
    }

    /// <summary>Closes the current document (Megatron's end_document): the next sequence starts a new one.</summary>
    public void EndDocument() => documentIndices.Add(sizes.Count);

    /// <summary>Writes PREFIX.idx and closes PREFIX.bin.</summary>
    public void Finish()
    {
        bin.Flush();
        using var w = new BinaryWriter(File.Create(prefix + ".idx"));
        w.Write(IndexedDataset.Magic);
        w.Write(IndexedDataset.Version);
        w.Write((byte)Dtype);
        w.Write((ulong)sizes.Count);
        w.Write((ulong)documentIndices.Count);
        foreach (var s in sizes) w.Write(s);
        long pointer = 0;
        foreach (var s in sizes)
        {
            w.Write(pointer);
            pointer += (long)s * IndexedDataset.SizeOf(Dtype);
        }
        foreach (var d in documentIndices) w.Write(d);
    }

    public void Dispose() => bin.Dispose();
}
