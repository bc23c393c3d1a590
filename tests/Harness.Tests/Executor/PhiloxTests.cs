using Harness.Executor.Fused;
using Xunit;

namespace Harness.Tests.Executor;

public class PhiloxTests
{
    [Theory]
    // Random123's known-answer vectors for philox4x32 with 10 rounds (tests/kat_vectors of DEShawResearch/random123):
    // counter words, key words, output words.
    [InlineData(0u, 0u, 0u, 0u, 0u, 0u, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)]
    [InlineData(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu)]
    [InlineData(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u)]
    public void MatchesRandom123sKnownAnswers(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, uint x, uint y, uint z, uint w) =>
        Assert.Equal((x, y, z, w), Philox.Block(c0, c1, c2, c3, k0, k1));

    [Fact]
    public void DropoutFactorsKeepOneMinusPScaledByItsInverse()
    {
        var draw = new DropoutDraw(0.1, 0x5EED);
        var factors = Philox.DropoutFactors(1_000_003, draw);
        float scale = (float)(1 / 0.9);
        Assert.All(factors, f => Assert.True(f == 0 || f == scale));
        double kept = factors.Count(f => f != 0) / (double)factors.Length;
        // Binomial: the kept share's standard deviation is sqrt(0.9 * 0.1 / 1e6) = 3e-4; 5 of them.
        Assert.InRange(kept, 0.9 - 1.5e-3, 0.9 + 1.5e-3);
    }

    [Fact]
    public void EachElementsFactorIsItsOwnWordOfItsBlock()
    {
        // Element e of the mask is word e mod 4 of block e / 4, keyed by the seed's two halves: element 4n + 2 is block n's
        // third word, whatever the count asked for (so a shorter tensor is a prefix of a longer one's mask).
        var draw = new DropoutDraw(0.5, unchecked((long)0xA1B2C3D4_0F1E2D3CUL));
        var factors = Philox.DropoutFactors(23, draw);
        Assert.Equal(factors[..10], Philox.DropoutFactors(10, draw));
        var (_, _, z, _) = Philox.Block(5, 0, 0, 0, 0x0F1E2D3Cu, 0xA1B2C3D4u);
        Assert.Equal((z >> 8) / (double)(1 << 24) >= 0.5 ? 2f : 0f, factors[22]);
    }

    [Fact]
    public void SeedsOfOneDrawGiveOneMaskAndOthersAnother()
    {
        var a = Philox.DropoutFactors(4096, new DropoutDraw(0.1, 1));
        Assert.Equal(a, Philox.DropoutFactors(4096, new DropoutDraw(0.1, 1)));
        Assert.NotEqual(a, Philox.DropoutFactors(4096, new DropoutDraw(0.1, 2)));
    }
}
