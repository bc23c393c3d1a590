using Harness.Executor.Native;
using Harness.Simulator.Specs;
using static Harness.Executor.Fused.KernelModule;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The GPT path's own CUDA kernels (gpt_kernels.cu): the residual add fused with LayerNorm, forward and backward (with the
/// weight and bias gradients in a second, two-stage kernel; <see cref="AddNormKernels"/>), and the word embedding gather with the learned positions added.
/// A module of their own, probed on its own: where it does not compile or load, the GPT path runs libtorch's operators and
/// the Llama path's kernels (<see cref="FusedKernels"/>) are unaffected. Entry points take contiguous bf16 CUDA tensors
/// (<see cref="FusedKernels.Applies"/>); callers keep libtorch's operators elsewhere, which are also the reference the
/// kernels are checked against (`harness kernel-check`).
/// </summary>
public static unsafe class GptKernels
{
    private static readonly KernelModule Module = new("harness_gpt", "add_norm.cuh", "gpt_kernels.cu");

    /// <summary>Whether <paramref name="m"/> has the GPT path these kernels serve: LayerNorm or learned positions.</summary>
    public static bool Serves(ModelSpec m) => m.Normalization == Normalization.LayerNorm || m.PositionEmbedding == PositionEmbedding.Learned;

    /// <summary>Compiles and loads the GPT kernels on <paramref name="device"/>; null when they are ready, else why not.</summary>
    public static string? Probe(int device) => Module.Probe(device, "add_layer_norm_forward_v8");

    /// <summary>s = x + r (with <paramref name="drop"/>, x + dropout(r)) and y = LayerNorm(s)·gamma + beta over the last
    /// dimension h, with each row's mean and 1/sqrt(variance + eps) (float32 [rows]).</summary>
    public static void AddLayerNormForward(Tensor x, Tensor r, Tensor gamma, Tensor beta, double epsilon, DropoutDraw? drop, Tensor s, Tensor y, Tensor mean, Tensor rstd) =>
        AddNormKernels.Forward(Module, x, r, gamma, beta, epsilon, drop, s, y, mean, rstd);

    /// <summary>d(x + r) (bf16, into <paramref name="dsum"/>) from the gradients of y and of s, and d gamma, d beta (bf16 [h]),
    /// from the forward's s, gamma and statistics; with the forward's <paramref name="drop"/>, r's gradient into <paramref name="dr"/>.</summary>
    public static void AddLayerNormBackward(Tensor dy, Tensor ds, Tensor s, Tensor gamma, Tensor mean, Tensor rstd, DropoutDraw? drop, Tensor dsum, Tensor? dr, Tensor dgamma, Tensor dbeta) =>
        AddNormKernels.Backward(Module, dy, ds, s, gamma, mean, rstd, drop, dsum, dr, dgamma, dbeta);

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
