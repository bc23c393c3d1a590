using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Native;

/// <summary>
/// Tensor-and-number operations with the number held as a Scalar until libtorch returns. TorchSharp turns a number into a
/// Scalar object and hands libtorch only its native handle; unreferenced from then on, the object can be finalized by the
/// collector while the kernel still reads it ('Unknown scalar type', a wrong value or a segfault, seen beside a collecting
/// thread). BannedSymbols.txt bans the implicit conversions, and the TorchSharp overloads that make such a Scalar themselves
/// (add without alpha, square, arange without a step, normal), so every number reaches libtorch through here or through a
/// <c>using</c>-held <c>ToScalar()</c>.
/// </summary>
public static class HeldScalars
{
    /// <summary>1 as a Scalar that lives as long as the process: the alpha, value or step that TorchSharp's add, add_, addcdiv,
    /// addcdiv_, + and arange without a step would otherwise pass as a temporary Scalar of their own (BannedSymbols.txt bans
    /// those overloads).</summary>
    public static Scalar One => Constants.One;

    /// <summary>2 as a Scalar that lives as long as the process: the exponent TorchSharp's square would pass as a temporary.</summary>
    public static Scalar Two => Constants.Two;

    /// <summary>t + u, a new tensor (TorchSharp's + with <see cref="One"/> held).</summary>
    public static Tensor Plus(this Tensor t, Tensor u) => t.add(u, One);

    /// <summary>t², a new tensor (TorchSharp's square with <see cref="Two"/> held).</summary>
    public static Tensor Squared(this Tensor t) => t.pow(Two);

    /// <summary>t · k, a new tensor.</summary>
    public static Tensor Times(this Tensor t, double k)
    {
        using var s = k.ToScalar();
        return t.mul(s);
    }

    /// <summary>t + k, a new tensor.</summary>
    public static Tensor Plus(this Tensor t, double k)
    {
        using var s = k.ToScalar();
        return t.add(s, One);
    }

    /// <summary>t / k, a new tensor.</summary>
    public static Tensor Over(this Tensor t, double k)
    {
        using var s = k.ToScalar();
        return t.div(s);
    }

    /// <summary>t with <paramref name="value"/> where <paramref name="mask"/> is true, a new tensor.</summary>
    public static Tensor FilledWhere(this Tensor t, Tensor mask, double value)
    {
        using var s = value.ToScalar();
        return t.masked_fill(mask, s);
    }

    /// <summary>torch.arange(start, end) as int64 on <paramref name="device"/>.</summary>
    public static Tensor Positions(long start, long end, Device? device = null)
    {
        using Scalar first = start.ToScalar(), last = end.ToScalar();
        return arange(first, last, One, dtype: ScalarType.Int64, device: device);
    }

    private static class Constants
    {
        public static readonly Scalar One, Two;

        // An explicit static constructor makes them at first use, after libtorch is initialized, not whenever a method that
        // reads them is compiled.
        static Constants() => (One, Two) = (1.ToScalar(), 2.ToScalar());
    }
}
