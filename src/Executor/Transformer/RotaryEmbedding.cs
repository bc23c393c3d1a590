using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// Rotary position embedding (Su et al. 2021, RoFormer), in Llama's rotate-half layout: channel i pairs with
/// i + d/2 and both turn by angle pos·θ^(-2i/d), θ = --rotary-base (ModelSpec.RotaryBase, Megatron's default 10000). Tables are precomputed once per sequence length:
/// x' = x·cos + roll(x, d/2)·sin±, where sin± carries rotate-half's sign (−sin on the first half).
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    private readonly Tensor cos, signedSin;
    private readonly long half;

    public RotaryEmbedding(long headDim, long seqLength, ScalarType dtype, Device device, double theta = 10000)
    {
        half = headDim / 2;
        using var scope = NewDisposeScope();
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar zero = 0.ToScalar(), halfDim = half.ToScalar(), positions = seqLength.ToScalar(),
            exponent = (-2.0 / headDim).ToScalar();
        var inverse = tensor(theta).pow(arange(zero, halfDim, HeldScalars.One, dtype: ScalarType.Float64).mul_(exponent));
        var angles = outer(arange(zero, positions, HeldScalars.One, dtype: ScalarType.Float64), inverse);     // [s, d/2]
        var full = cat(new[] { angles, angles }, -1);                                       // [s, d]
        cos = full.cos().to(dtype, device).MoveToOuterDisposeScope();
        var sin = full.sin();
        signedSin = cat(new[] { -sin[.., ..(int)half], sin[.., (int)half..] }, -1).to(dtype, device).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Rotates x of shape [b, s, (head dims...), d] by its positions: 0..s-1, or the given global ones (context
    /// parallelism). The result is contiguous in x's shape: sequence-first, attention rotates the QKV projection's
    /// views before any transpose or copy.
    /// </summary>
    public Tensor Apply(Tensor x, Tensor? positions = null)
    {
        long s = x.shape[1];
        using var scope = NewDisposeScope();
        var shape = new long[x.dim() - 1];
        Array.Fill(shape, 1L);
        shape[0] = s;
        shape[^1] = cos.shape[1];
        var c = positions is null ? cos[..(int)s] : cos.index_select(0, positions);
        var sn = positions is null ? signedSin[..(int)s] : signedSin.index_select(0, positions);
        return ScriptedKernels.Rotary(x, c.view(shape), sn.view(shape), half).MoveToOuterDisposeScope();
    }

    /// <summary>The cos and sin± tables, one row of d entries per position (for the fused QKV kernel).</summary>
    public (Tensor Cos, Tensor SignedSin) Tables => (cos, signedSin);

    public void Dispose()
    {
        cos.Dispose();
        signedSin.Dispose();
    }
}
