using Harness.Executor.Native;
using static Harness.Executor.Fused.KernelModule;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// Launches the residual add fused with a norm (add_norm.cuh) from the module that serves that norm: LayerNorm from the GPT
/// path's (<see cref="GptKernels"/>, entry points add_layer_norm_*), RMSNorm from the Llama path's (<see cref="FusedKernels"/>,
/// add_rms_norm_*). A LayerNorm call passes its bias and a mean buffer; an RMSNorm call passes neither. Operands are
/// contiguous bf16 CUDA tensors (<see cref="AddNormFunction"/> checks them).
/// </summary>
public static unsafe class AddNormKernels
{
    /// <summary>Rows of the partial weight-gradient sums at most: enough blocks to fill a GPU at gpt2-large's h (5 column
    /// slabs of 256 each), few enough that the float32 partials stay a few MB.</summary>
    public const long WeightGradientParts = 256;

    /// <summary>Threads of a row kernel (one block per row of <paramref name="h"/>, <paramref name="v"/> elements per access):
    /// a warp per 32 accesses of the row, from one warp to 256 threads (longer rows loop).</summary>
    public static int RowThreads(long h, int v) => (int)Math.Clamp((h / v + 31) / 32 * 32, 32, Threads);

    /// <summary>How the weight-gradient reduction splits <paramref name="rows"/>: rows per part and parts.</summary>
    public static (long RowsPerPart, long Parts) WeightGradientSplit(long rows)
    {
        long perPart = (rows + WeightGradientParts - 1) / WeightGradientParts;
        return (perPart, (rows + perPart - 1) / perPart);
    }

    /// <summary>s = x + r (with <paramref name="drop"/>, x + dropout(r)) and y = norm(s)·gamma (+ beta) over the last
    /// dimension h, with each row's 1/sqrt(variance + eps) (RMSNorm: of mean(s²) + eps) and, for LayerNorm, its mean
    /// (float32 [rows]).</summary>
    internal static void Forward(KernelModule module, Tensor x, Tensor r, Tensor gamma, Tensor? beta, double epsilon, DropoutDraw? drop, Tensor s, Tensor y, Tensor? mean, Tensor rstd)
    {
        IntPtr px = TensorPointer.Of(x), pr = TensorPointer.Of(r), pg = TensorPointer.Of(gamma), ps = TensorPointer.Of(s), py = TensorPointer.Of(y),
            prs = TensorPointer.Of(rstd);
        long h = x.shape[^1];
        float eps = (float)epsilon;
        var (p, scale, seed) = Dropout(drop);
        uint rows = (uint)(x.numel() / h);
        if (beta is null)
        {
            int v = Vector(h, px, pr, pg, ps, py);
            void** args = stackalloc void*[] { &px, &pr, &pg, &ps, &py, &prs, &h, &eps, &p, &scale, &seed };
            module.Launch(x, $"add_rms_norm_forward_v{v}", rows, RowThreads(h, v), args);
        }
        else
        {
            IntPtr pb = TensorPointer.Of(beta), pm = TensorPointer.Of(mean!);
            int v = Vector(h, px, pr, pg, pb, ps, py);
            void** args = stackalloc void*[] { &px, &pr, &pg, &pb, &ps, &py, &pm, &prs, &h, &eps, &p, &scale, &seed };
            module.Launch(x, $"add_layer_norm_forward_v{v}", rows, RowThreads(h, v), args);
        }
    }

    /// <summary>
    /// d(x + r) (bf16, into <paramref name="dsum"/>) from the gradients of y and of s, and d gamma (and, for LayerNorm,
    /// d beta; bf16 [h]), from the forward's s, gamma and statistics, the weight gradients in a two-stage reduction. With the
    /// forward's <paramref name="drop"/>, r's gradient through the dropout into <paramref name="dr"/>.
    /// </summary>
    internal static void Backward(KernelModule module, Tensor dy, Tensor ds, Tensor s, Tensor gamma, Tensor? mean, Tensor rstd, DropoutDraw? drop,
        Tensor dsum, Tensor? dr, Tensor dgamma, Tensor? dbeta)
    {
        IntPtr pdy = TensorPointer.Of(dy), pds = TensorPointer.Of(ds), ps = TensorPointer.Of(s), pg = TensorPointer.Of(gamma),
            prs = TensorPointer.Of(rstd), pdx = TensorPointer.Of(dsum), pdr = dr is null ? IntPtr.Zero : TensorPointer.Of(dr), pdg = TensorPointer.Of(dgamma);
        long h = s.shape[^1], rows = s.numel() / h;
        var (p, scale, seed) = Dropout(drop);
        int v = dr is null ? Vector(h, pdy, pds, ps, pg, pdx) : Vector(h, pdy, pds, ps, pg, pdx, pdr);
        var (perPart, parts) = WeightGradientSplit(rows);
        long columnBlocks = (h + Threads - 1) / Threads;
        using var partialGamma = empty(new[] { parts, h }, dtype: ScalarType.Float32, device: s.device);
        IntPtr ppg = TensorPointer.Of(partialGamma);
        if (mean is null)
        {
            void** rowArgs = stackalloc void*[] { &pdy, &pds, &ps, &pg, &prs, &pdx, &pdr, &h, &p, &scale, &seed };
            module.Launch(s, $"add_rms_norm_backward_v{v}", (uint)rows, RowThreads(h, v), rowArgs);
            void** partialArgs = stackalloc void*[] { &pdy, &ps, &prs, &ppg, &rows, &h, &perPart, &columnBlocks };
            module.Launch(s, "rms_norm_weight_grad_partial", (uint)(parts * columnBlocks), Threads, partialArgs);
            void** finalArgs = stackalloc void*[] { &ppg, &pdg, &parts, &h };
            module.Launch(s, "rms_norm_weight_grad_final", Blocks(h), Threads, finalArgs);
            return;
        }
        IntPtr pm = TensorPointer.Of(mean), pdb = TensorPointer.Of(dbeta!);
        void** layerArgs = stackalloc void*[] { &pdy, &pds, &ps, &pg, &pm, &prs, &pdx, &pdr, &h, &p, &scale, &seed };
        module.Launch(s, $"add_layer_norm_backward_v{v}", (uint)rows, RowThreads(h, v), layerArgs);
        using var partialBeta = empty(new[] { parts, h }, dtype: ScalarType.Float32, device: s.device);
        IntPtr ppb = TensorPointer.Of(partialBeta);
        void** layerPartialArgs = stackalloc void*[] { &pdy, &ps, &pm, &prs, &ppg, &ppb, &rows, &h, &perPart, &columnBlocks };
        module.Launch(s, "layer_norm_weight_grad_partial", (uint)(parts * columnBlocks), Threads, layerPartialArgs);
        void** layerFinalArgs = stackalloc void*[] { &ppg, &ppb, &pdg, &pdb, &parts, &h };
        module.Launch(s, "layer_norm_weight_grad_final", Blocks(h), Threads, layerFinalArgs);
    }

    /// <summary>The kernels' dropout arguments: p (0: none), the kept elements' scale, and the seed as Philox's key.</summary>
    private static (float P, float Scale, ulong Seed) Dropout(DropoutDraw? drop) =>
        drop is { } d && d.P > 0 ? (d.KernelP, d.Scale, (ulong)d.Seed) : (0f, 1f, 0UL);
}
