using System.Buffers.Binary;
using Harness.Executor.Data;

namespace Harness.Tests.Executor;

public class DataTests
{
    private static string TempPrefix() => Path.Combine(TestTemp.Root, $"harness-data-{Guid.NewGuid():N}", "ds");

    [Fact]
    public void IndexedDatasetRoundTripsAndMatchesMegatronsByteLayout()
    {
        string prefix = TempPrefix();
        var docs = new[] { new[] { 1, 2, 3 }, new[] { 65000 }, new[] { 7, 8 } };
        using (var b = new IndexedDatasetBuilder(prefix, vocabSize: 50257))
        {
            foreach (var d in docs) { b.Add(d); b.EndDocument(); }
            b.Finish();
        }
        byte[] idx = File.ReadAllBytes(prefix + ".idx"), bin = File.ReadAllBytes(prefix + ".bin");
        // Header: magic, version 1 (u64), dtype code 8 = uint16 (u8), 3 sequences (u64), 4 document indices (u64).
        Assert.Equal("MMIDIDX\0\0"u8.ToArray(), idx[..9]);
        Assert.Equal(1UL, BinaryPrimitives.ReadUInt64LittleEndian(idx.AsSpan(9)));
        Assert.Equal(8, idx[17]);
        Assert.Equal(3UL, BinaryPrimitives.ReadUInt64LittleEndian(idx.AsSpan(18)));
        Assert.Equal(4UL, BinaryPrimitives.ReadUInt64LittleEndian(idx.AsSpan(26)));
        // sizes (i32) at 34, pointers (i64, bytes) at 46, document indices (i64) at 70; 102 bytes in all.
        Assert.Equal(new[] { 3, 1, 2 }, Enumerable.Range(0, 3).Select(i => BinaryPrimitives.ReadInt32LittleEndian(idx.AsSpan(34 + 4 * i))));
        Assert.Equal(new long[] { 0, 6, 8 }, Enumerable.Range(0, 3).Select(i => BinaryPrimitives.ReadInt64LittleEndian(idx.AsSpan(46 + 8 * i))));
        Assert.Equal(new long[] { 0, 1, 2, 3 }, Enumerable.Range(0, 4).Select(i => BinaryPrimitives.ReadInt64LittleEndian(idx.AsSpan(70 + 8 * i))));
        Assert.Equal(102, idx.Length);
        // .bin: the tokens as little-endian uint16, back to back.
        Assert.Equal(new byte[] { 1, 0, 2, 0, 3, 0, 0xE8, 0xFD, 7, 0, 8, 0 }, bin);

        using var ds = new IndexedDataset(prefix);
        Assert.Equal(IndexedDtype.UInt16, ds.Dtype);
        Assert.Equal(6, ds.TokenCount);
        for (int i = 0; i < docs.Length; i++) Assert.Equal(docs[i].Select(t => (long)t), ds.Sequence(i));
        var stream = new long[4];
        ds.Read(2, stream);
        Assert.Equal(new long[] { 3, 65000, 7, 8 }, stream);
    }

    [Fact]
    public void ACorruptIndexIsRejectedWithTheReason()
    {
        string prefix = TempPrefix();
        using (var b = new IndexedDatasetBuilder(prefix, 100)) { b.Add(new[] { 1, 2 }); b.EndDocument(); b.Finish(); }
        var idx = File.ReadAllBytes(prefix + ".idx");
        File.WriteAllBytes(prefix + ".idx", idx[..^3]);
        var e = Assert.Throws<InvalidDataException>(() => new IndexedDataset(prefix));
        Assert.Contains("need", e.Message);
        idx[0] = (byte)'X';
        File.WriteAllBytes(prefix + ".idx", idx);
        Assert.Contains("MMIDIDX", Assert.Throws<InvalidDataException>(() => new IndexedDataset(prefix)).Message);
    }

    [Fact]
    public void Gpt2TokenizerMatchesKnownIdsAndRoundTrips()
    {
        var t = new Gpt2Tokenizer();
        // GPT-2 BPE: "Hello" = 15496, " world" = 995.
        Assert.Equal(new[] { 15496, 995 }, t.Encode("Hello world"));
        const string text = "The World Factbook, 2015 — naïve café: ünïcödé and   spaces.\nNew line.";
        Assert.Equal(text, t.Decode(t.Encode(text)));
    }

    [Fact]
    public void ShippedCorpusIsWhatPreprocessMakesOfTheShippedText()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Harness.sln"))) root = Path.GetDirectoryName(root)!;
        string output = TempPrefix();
        // As data/corpus/README.md makes it: Megatron's --append-eod, one dataset for the "text" key, four workers.
        var result = Preprocessor.Run([Path.Combine(root, "data", "corpus", "factbook.jsonl")], output, ["text"], appendEod: true, new Gpt2Tokenizer(), workers: 4).Single();
        string prefix = output + "_text_document";
        Assert.Equal(prefix, result.Prefix);
        Assert.Equal(261, result.Documents);
        foreach (var ext in new[] { ".bin", ".idx" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(root, "data", "corpus", "factbook_text_document" + ext)), File.ReadAllBytes(prefix + ext));
        using var ds = new IndexedDataset(prefix);
        // Every document ends with <|endoftext|>.
        Assert.All(Enumerable.Range(0, ds.Sizes.Length), i => Assert.Equal(Gpt2Tokenizer.EndOfText, ds.Sequence(i)[^1]));
    }

    [Fact]
    public void SamplerCoversAnEpochOnceInASeededOrder()
    {
        var source = new MockTokenSource(1000, 3);
        var counting = new ArraySource(Enumerable.Range(0, 41).Select(i => (long)i).ToArray());
        var a = new GptSampler(new GptDataset(counting, 4, seed: 5), 4);
        var firsts = new List<long>();
        var buffer = new long[5];
        for (int i = 0; i < 10; i++) { a.Next(1, buffer); firsts.Add(buffer[0]); Assert.Equal(buffer[0] + 4, buffer[4]); }
        Assert.Equal(Enumerable.Range(0, 10).Select(i => 4L * i), firsts.OrderBy(x => x));
        var b = new GptSampler(new GptDataset(counting, 4, seed: 5), 4) { Position = 3 };
        b.Next(1, buffer);
        Assert.Equal(firsts[3], buffer[0]);
        // Mock tokens are a pure function of (seed, position).
        long[] x = new long[8], y = new long[8];
        source.Read(100, x);
        new MockTokenSource(1000, 3).Read(100, y);
        Assert.Equal(x, y);
        Assert.All(x, t => Assert.InRange(t, 0, 999));
    }

    private sealed class ArraySource(long[] tokens) : ITokenSource
    {
        public long TokenCount => tokens.Length;
        public void Read(long offset, Span<long> destination) => tokens.AsSpan((int)offset, destination.Length).CopyTo(destination);
    }
}
