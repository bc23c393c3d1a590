using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Transformer;

/// <summary>
/// A layer's MLP output on its way into the residual stream, with the hidden dropout drawn for it and not yet applied
/// (<see cref="PendingDropout"/>): the next input norm, or the final norm, adds it in its own kernel where that fuses
/// (<see cref="TransformerLayer.FusesResidualNorms"/>), dropout included; elsewhere <see cref="AddTo"/> makes the sum.
/// </summary>
public sealed record ResidualDelta(Tensor Value, PendingDropout? Dropout) : IDisposable
{
    /// <summary>residual + dropout(delta) through libtorch's operators (the dropped copy released once added).</summary>
    public Tensor AddTo(Tensor residual) => Add(residual, Value, Dropout);

    /// <summary>x + r, r first dropped as <paramref name="drop"/> says, through libtorch's dropout and add.</summary>
    public static Tensor Add(Tensor x, Tensor r, PendingDropout? drop)
    {
        if (drop is null) return x.Plus(r);
        using var dropped = drop.Apply(r);
        return x.Plus(dropped);
    }

    public void Dispose() => Value.Dispose();
}
