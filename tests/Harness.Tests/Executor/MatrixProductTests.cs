using Harness.Executor.Native;
using static TorchSharp.torch;
using Xunit;

namespace Harness.Tests.Executor;

// libtorch's matmul is the reference MatrixProduct must equal bit for bit.
#pragma warning disable RS0030

public class MatrixProductTests
{
    [Theory]
    // Matrix · matrix; a stack of rows · a weight (a linear's data gradient); attention's batched [b, heads, s, d] products;
    // ring attention's query groups against one key block ([b, g, heads/g, s, d] · [b, g, 1, d, s], the 1 broadcast).
    [InlineData(new long[] { 5, 7 }, new long[] { 7, 3 })]
    [InlineData(new long[] { 2, 6, 7 }, new long[] { 7, 3 })]
    [InlineData(new long[] { 2, 4, 6, 8 }, new long[] { 2, 4, 8, 6 })]
    [InlineData(new long[] { 2, 3, 4, 6, 8 }, new long[] { 2, 3, 1, 8, 6 })]
    public void EqualsLibtorchsMatmulBitForBit(long[] left, long[] right)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(7);
        var a = randn(left, generator: generator);
        var b = randn(right, generator: generator);
        var expected = a.matmul(b);
        var actual = MatrixProduct.Of(a, b);
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(0f, (actual - expected).abs().max().item<float>());
    }

    [Fact]
    public void RefusesVectorsAndBatchesThatDoNotBroadcast()
    {
        using var scope = NewDisposeScope();
        Assert.Throws<ArgumentException>(() => MatrixProduct.Of(ones(3), ones(3, 2)));
        Assert.Throws<ArgumentException>(() => MatrixProduct.Of(ones(2, 3, 4), ones(3, 4, 5)));
    }
}
