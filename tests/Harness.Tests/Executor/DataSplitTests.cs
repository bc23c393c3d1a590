using Harness.Executor.Data;
using Harness.Tests.Parallel;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>
/// Megatron's --split: the weights read as Megatron reads them, the documents cut at the rounded book-ends of the normalized
/// running sums (megatron/core/datasets: parse_and_normalize_split, convert_split_vector_to_split_matrix, MegatronDataset),
/// and each share a run of whole documents' tokens.
/// </summary>
[Collection("Console")]
public class DataSplitTests
{
    [Theory]
    [InlineData("969,30,1", 969, 30, 1)]
    [InlineData("969, 30, 1", 969, 30, 1)]
    [InlineData("98/2/0", 98, 2, 0)]
    [InlineData("0.9,0.1", 0.9, 0.1, 0)]
    [InlineData("1", 1, 0, 0)]
    public void WeightsAreReadAsMegatronReadsThem(string text, double train, double valid, double test) =>
        Assert.Equal(new DataSplit(train, valid, test), DataSplit.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("1,2,3,4")]
    public void TextWithoutOneToThreeWeightsIsNoSplit(string text) => Assert.Null(DataSplit.Parse(text));

    [Theory]
    // 8,1,1 of 10 documents: book-ends 0, 0.8, 0.9, 1.
    [InlineData("8,1,1", 10, 0, 8, 8, 9, 9, 10)]
    // 969,30,1 of the shipped corpus's 261: round(252.909) = 253, round(260.739) = 261, and the test share round(261) to 261 is empty.
    [InlineData("969,30,1", 261, 0, 253, 253, 261, 261, 261)]
    // 1,1 of 5: round(2.5) is 2, half to even as Python's round.
    [InlineData("1,1", 5, 0, 2, 2, 5, 0, 0)]
    public void DocumentsAreCutAtTheRoundedBookEnds(string text, long documents, long t0, long t1, long v0, long v1, long s0, long s1)
    {
        var split = DataSplit.Parse(text)!;
        Assert.Equal((t0, t1), split.Documents(DataSplit.Share.Train, documents));
        Assert.Equal((v0, v1), split.Documents(DataSplit.Share.Valid, documents));
        Assert.Equal((s0, s1), split.Documents(DataSplit.Share.Test, documents));
    }

    [Fact]
    public void TheSharesOfAnIndexedDatasetAreTheirDocumentsTokens()
    {
        string prefix = Path.Combine(Repository, "data", "corpus", "factbook_text_document");
        using var whole = new IndexedDataset(prefix);
        var settings = new RunSettings(DataPath: DataBlend.Single(prefix), Split: new DataSplit(969, 30, 1));
        using var data = SplitData.Open(settings, 50257, 64, 1);
        ITokenSource train = ((GptDataset)data.Train).Tokens, valid = ((GptDataset)data.Valid!).Tokens;
        long Tokens(int firstDocument, int endDocument) =>
            Enumerable.Range(firstDocument, endDocument - firstDocument).Sum(d => (long)whole.Sizes[(int)whole.DocumentIndices[d]]);
        Assert.Equal(Tokens(0, 253), train.TokenCount);
        Assert.Equal(Tokens(253, 261), valid.TokenCount);
        // The validation share starts with document 253's first token.
        Span<long> first = stackalloc long[4];
        valid.Read(0, first);
        Assert.Equal(whole.Sequence((int)whole.DocumentIndices[253])[..4], first.ToArray());
        // A share shorter than one sample is one sentence.
        var tiny = Assert.Throws<ArgumentException>(() => SplitData.Open(settings with { Split = new DataSplit(1000, 1, 0) }, 50257, 64, 1));
        Assert.StartsWith($"--split 1000,1,0 gives the valid share documents [261, 261) of 261 in {prefix}: 0 tokens, fewer than one sample", tiny.Message);
    }

    /// <summary>Evaluation runs without dropout (Megatron's model.eval()): at --lr 0 the weights never move, so a model with
    /// hidden and attention dropout 0.5 has exactly the validation losses of the same model without, while its training losses differ.</summary>
    [Fact]
    public void ValidationLossesAreComputedWithoutDropout()
    {
        string[] run =
        [
            "--num-layers", "2", "--hidden-size", "32", "--ffn-hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "16",
            "--vocab-size", "128", "--mock-data", "--train-iters", "2", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "0",
            "--device", "cpu", "--split", "9,1", "--eval-interval", "1", "--eval-iters", "3",
        ];
        var dropped = ParallelRunCommandTests.Losses([.. run, "--hidden-dropout", "0.5", "--attention-dropout", "0.5"]);
        var plain = ParallelRunCommandTests.Losses([.. run, "--hidden-dropout", "0", "--attention-dropout", "0"]);
        Assert.Equal(plain.Validation, dropped.Validation);
        Assert.All(plain.Validation, v => Assert.NotNull(v));
        Assert.NotEqual(plain.Training[0], dropped.Training[0]);
    }

    private static string Repository
    {
        get
        {
            string root = AppContext.BaseDirectory;
            while (!File.Exists(Path.Combine(root, "Harness.sln"))) root = Path.GetDirectoryName(root)!;
            return root;
        }
    }
}
