using static TorchSharp.torch;

namespace Harness.Executor.Autograd;

/// <summary>
/// The end of every custom autograd function's backward. TorchSharp wraps the incoming gradients in managed tensors
/// it never disposes, and libtorch copies the returned gradients out of managed tensors that nobody disposes
/// either: both keep their GPU memory until the .NET garbage collector finalizes them, which can be gigabytes per
/// micro-batch (seen on an H200: 150 GB after one caat-1b iteration). Here the incoming gradients are released as
/// soon as backward is done with them, and the returned ones when the same autograd thread next hands over (libtorch
/// has copied them by then), so at most one function's gradients per thread outlive their use.
/// </summary>
public static class GradientHandOver
{
    [ThreadStatic] private static List<Tensor>? _previous;

    /// <summary>Returns <paramref name="gradients"/> (null for inputs without one) to libtorch, releasing the
    /// <paramref name="consumed"/> incoming gradients, except any that is itself returned.</summary>
    public static List<Tensor> Return(IEnumerable<Tensor> consumed, params Tensor?[] gradients)
    {
        var returned = gradients.Where(g => g is not null).Cast<Tensor>().ToList();
        if (_previous is { } previous)
            foreach (var t in previous) t.Dispose();
        _previous = returned;
        foreach (var t in consumed)
            if (!returned.Any(r => ReferenceEquals(r, t))) t.Dispose();
        return gradients.Select(g => g!).ToList();
    }

    /// <inheritdoc cref="Return(IEnumerable{Tensor}, Tensor?[])"/>
    public static List<Tensor> Return(Tensor consumed, params Tensor?[] gradients) => Return([consumed], gradients);
}
