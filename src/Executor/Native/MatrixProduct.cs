using static TorchSharp.torch;

namespace Harness.Executor.Native;

/// <summary>
/// libtorch's matmul for the shapes the executor multiplies, through calls whose C++ exceptions TorchSharp catches.
/// TorchSharp's THSTensor_matmul (0.107, src/Native/LibTorchSharp/THSTensorMath.cpp) calls at::matmul without its CATCH
/// macro, so an allocation that fails inside it (c10::OutOfMemoryError) unwinds into managed frames and the process ends in
/// std::terminate, where every other operator's failure arrives as an exception a run reports in one sentence. The folds are
/// at::matmul's (aten/src/ATen/native/LinearAlgebra.cpp): a stack of matrices times one matrix as one mm over the stacked
/// rows, stacks of matrices as one bmm over their broadcast batch, so the products are matmul's bits where matmul folds the
/// same way (the test's shapes); for a stack whose strides do not fold, times a matrix that needs no gradient, matmul runs
/// bmm where this runs mm over a copy: the same sums, possibly in another order.
/// </summary>
public static class MatrixProduct
{
    /// <summary>a · b over the last two dimensions of each (b of 2 dimensions, or both of at least 2 with broadcastable batches).</summary>
    public static Tensor Of(Tensor a, Tensor b)
    {
        if (a.dim() < 2 || b.dim() < 2)
            throw new ArgumentException($"MatrixProduct.Of multiplies matrices or stacks of them; got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}].");
        long[] outer = [.. a.shape[..^1], b.shape[^1]];
        if (b.dim() == 2)
        {
            if (a.dim() == 2) return a.mm(b);
            using var rows = a.reshape(-1, a.shape[^1]);
            using var product = rows.mm(b);
            return product.view(outer);
        }
        long[] batch = Broadcast(a.shape[..^2], b.shape[..^2]);
        long n = batch.Aggregate(1L, (x, y) => x * y);
        using var left = a.expand([.. batch, a.shape[^2], a.shape[^1]]).reshape(n, a.shape[^2], a.shape[^1]);
        using var right = b.expand([.. batch, b.shape[^2], b.shape[^1]]).reshape(n, b.shape[^2], b.shape[^1]);
        using var stacked = left.bmm(right);
        return stacked.view([.. batch, a.shape[^2], b.shape[^1]]);
    }

    /// <summary>NumPy's broadcast of two batch shapes (aligned at the right, a 1 stretched to the other's size).</summary>
    private static long[] Broadcast(long[] x, long[] y)
    {
        int n = Math.Max(x.Length, y.Length);
        var shape = new long[n];
        for (int i = 1; i <= n; i++)
        {
            long u = i <= x.Length ? x[^i] : 1, v = i <= y.Length ? y[^i] : 1;
            shape[^i] = u == v || v == 1 ? u : u == 1 ? v
                : throw new ArgumentException($"MatrixProduct.Of: batch shapes [{string.Join(", ", x)}] and [{string.Join(", ", y)}] do not broadcast.");
        }
        return shape;
    }
}
