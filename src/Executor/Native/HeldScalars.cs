using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Native;

/// <summary>
/// Tensor-and-number operations with the number held as a Scalar until libtorch returns. TorchSharp turns a number into a
/// Scalar object and hands libtorch only its native handle; unreferenced from then on, the object can be finalized by the
/// collector while the kernel still reads it ('Unknown scalar type', a wrong value or a segfault, seen beside a collecting
/// thread). BannedSymbols.txt bans the implicit conversions, so every number reaches libtorch through here or through a
/// <c>using</c>-held <c>ToScalar()</c>.
/// </summary>
public static class HeldScalars
{
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
        return t.add(s);
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
        return arange(first, last, dtype: ScalarType.Int64, device: device);
    }
}
