using Harness.Executor.Native;
using Harness.Simulator.Specs;
using static Harness.Executor.Fused.KernelModule;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The GPT path's own CUDA kernels (gpt_kernels.cu): the residual add fused with LayerNorm, forward and backward (with the
/// weight and bias gradients in a second, two-stage kernel), and the word embedding gather with the learned positions added.
/// A module of their own, probed on its own: where it does not compile or load, the GPT path runs libtorch's operators and
/// the Llama path's kernels (<see cref="FusedKernels"/>) are unaffected. Entry points take contiguous bf16 CUDA tensors
/// (<see cref="FusedKernels.Applies"/>); callers keep libtorch's operators elsewhere, which are also the reference the
/// kernels are checked against (`harness kernel-check`).
/// </summary>
public static unsafe class GptKernels
{
    private static readonly KernelModule Module = new("harness_gpt", "gpt_kernels.cu");

    /// <summary>Rows of the partial weight-gradient sums at most: enough blocks to fill a GPU at gpt2-large's h (5 column
    /// slabs of 256 each), few enough that the float32 partials stay a few MB.</summary>
    public const long WeightGradientParts = 256;

    /// <summary>Whether <paramref name="m"/> has the GPT path these kernels serve: LayerNorm or learned positions.</summary>
    public static bool Serves(ModelSpec m) => m.Normalization == Normalization.LayerNorm || m.PositionEmbedding == PositionEmbedding.Learned;

    /// <summary>Compiles and loads the GPT kernels on <paramref name="device"/>; null when they are ready, else why not.</summary>
    public static string? Probe(int device) => Module.Probe(device, "add_layer_norm_forward_v8");

    /// <summary>Threads of a row kernel (one block per row of <paramref name="h"/>, <paramref name="v"/> elements per access):
    /// a warp per 32 accesses of the row, from one warp to 256 threads (longer rows loop).</summary>
    public static int RowThreads(long h, int v) => (int)Math.Clamp((h / v + 31) / 32 * 32, 32, Threads);

    /// <summary>How the weight-gradient reduction splits <paramref name="rows"/>: rows per part and parts.</summary>
    public static (long RowsPerPart, long Parts) WeightGradientSplit(long rows)
    {
        long perPart = (rows + WeightGradientParts - 1) / WeightGradientParts;
        return (perPart, (rows + perPart - 1) / perPart);
    }

    /// <summary>s = x + r and y = LayerNorm(s)·gamma + beta over the last dimension h, with each row's mean and
    /// 1/sqrt(variance + eps) (float32 [rows]).</summary>
    public static void AddLayerNormForward(Tensor x, Tensor r, Tensor gamma, Tensor beta, double epsilon, Tensor s, Tensor y, Tensor mean, Tensor rstd)
    {
        IntPtr px = TensorPointer.Of(x), pr = TensorPointer.Of(r), pg = TensorPointer.Of(gamma), pb = TensorPointer.Of(beta),
            ps = TensorPointer.Of(s), py = TensorPointer.Of(y), pm = TensorPointer.Of(mean), prs = TensorPointer.Of(rstd);
        long h = x.shape[^1];
        float eps = (float)epsilon;
        int v = Vector(h, px, pr, pg, pb, ps, py);
        void** args = stackalloc void*[] { &px, &pr, &pg, &pb, &ps, &py, &pm, &prs, &h, &eps };
        Module.Launch(x, $"add_layer_norm_forward_v{v}", (uint)(x.numel() / h), RowThreads(h, v), args);
    }

    /// <summary>
    /// d(x + r) (bf16, into <paramref name="dsum"/>) from the gradients of y and of s, and d gamma, d beta (bf16 [h]), from
    /// the forward's s, gamma and statistics.
    /// </summary>
    public static void AddLayerNormBackward(Tensor dy, Tensor ds, Tensor s, Tensor gamma, Tensor mean, Tensor rstd, Tensor dsum, Tensor dgamma, Tensor dbeta)
    {
        IntPtr pdy = TensorPointer.Of(dy), pds = TensorPointer.Of(ds), ps = TensorPointer.Of(s), pg = TensorPointer.Of(gamma),
            pm = TensorPointer.Of(mean), prs = TensorPointer.Of(rstd), pdx = TensorPointer.Of(dsum);
        long h = s.shape[^1], rows = s.numel() / h;
        int v = Vector(h, pdy, pds, ps, pg, pdx);
        void** rowArgs = stackalloc void*[] { &pdy, &pds, &ps, &pg, &pm, &prs, &pdx, &h };
        Module.Launch(s, $"add_layer_norm_backward_v{v}", (uint)rows, RowThreads(h, v), rowArgs);

        var (perPart, parts) = WeightGradientSplit(rows);
        long columnBlocks = (h + Threads - 1) / Threads;
        using var partialGamma = empty(new[] { parts, h }, dtype: ScalarType.Float32, device: s.device);
        using var partialBeta = empty(new[] { parts, h }, dtype: ScalarType.Float32, device: s.device);
        IntPtr ppg = TensorPointer.Of(partialGamma), ppb = TensorPointer.Of(partialBeta), pdg = TensorPointer.Of(dgamma), pdb = TensorPointer.Of(dbeta);
        void** partialArgs = stackalloc void*[] { &pdy, &ps, &pm, &prs, &ppg, &ppb, &rows, &h, &perPart, &columnBlocks };
        Module.Launch(s, "layer_norm_weight_grad_partial", (uint)(parts * columnBlocks), Threads, partialArgs);
        void** finalArgs = stackalloc void*[] { &ppg, &ppb, &pdg, &pdb, &parts, &h };
        Module.Launch(s, "layer_norm_weight_grad_final", Blocks(h), Threads, finalArgs);
    }

    /// <summary>
    /// out [tokens, h] = word[ids − vocabStart] (a zero row for an id outside this rank's rows of the table), plus, when
    /// <paramref name="position"/> is given, position[positionIds[t mod seq]] with <paramref name="seq"/> = positionIds' length.
    /// </summary>
    public static void EmbeddingForward(Tensor ids, Tensor word, Tensor? position, Tensor? positionIds, long vocabStart, Tensor output)
    {
        IntPtr pi = TensorPointer.Of(ids), pw = TensorPointer.Of(word), pp = position is null ? IntPtr.Zero : TensorPointer.Of(position),
            ppi = positionIds is null ? IntPtr.Zero : TensorPointer.Of(positionIds), po = TensorPointer.Of(output);
        long tokens = ids.numel(), h = word.shape[1], vocabCount = word.shape[0], seq = positionIds?.numel() ?? 1;
        int v = position is null ? Vector(h, pw, po) : Vector(h, pw, pp, po);
        void** args = stackalloc void*[] { &pi, &pw, &pp, &ppi, &po, &tokens, &seq, &h, &vocabStart, &vocabCount };
        Module.Launch(word, $"embedding_forward_v{v}", Blocks(tokens * h / v), Threads, args);
    }
}
