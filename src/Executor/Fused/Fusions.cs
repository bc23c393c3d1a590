using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// Which of the executor's fusions a run (or a rank) uses, and the attention kernel it runs: <see cref="Kernels"/>, its own CUDA kernels
/// (<see cref="FusedKernels"/>: SwiGLU, the QKV split with rotary positions, the residual add + RMSNorm, cross-entropy,
/// AdamW), and
/// <see cref="GradientAccumulation"/>, Megatron's gradient-accumulation fusion (<see cref="LinearWithGradAccumulation"/>), and
/// <see cref="GptKernels"/>, the GPT path's kernels (<see cref="Fused.GptKernels"/>: the residual add with LayerNorm, the
/// embedding with learned positions), which need <see cref="Kernels"/> and are compiled and probed on their own.
/// </summary>
/// <param name="Notes">Fusions that were asked for but are off on this device, each with why, in one sentence.</param>
/// <param name="Attention">The attention kernel that runs (Transformer.AttentionKernel.Select, which the caller passes in).</param>
public sealed record Fusions(bool Kernels, bool GradientAccumulation, IReadOnlyList<string> Notes, AttentionBackend Attention, bool GptKernels = false)
{
    /// <summary>
    /// The fusions asked for (--no-fused-kernels, --no-gradient-accumulation-fusion turn them off) that work here: on a GPU
    /// where they compile and load (the probes); the kernels not under fp16 (they are bf16 kernels, and the AdamW kernel
    /// writes bf16 weights); gradient-accumulation fusion only under bf16 or fp16, where there are half-precision gradients
    /// to avoid (Megatron fuses both). A CPU needs no probe: each kernel's call site runs libtorch's operators for tensors the kernel does not apply
    /// to (<see cref="FusedKernels.Applies"/>), so a CPU run computes the same bits with the kernels asked for or not, and
    /// gradient-accumulation fusion has a CPU form (<see cref="WeightGradient"/>, for bf16 CPU ranks in tests). The GPT path's
    /// kernels are probed only for a model that has the GPT path (<paramref name="gptPath"/>); where they fail, only that path
    /// runs libtorch's operators, and the run says so once.
    /// </summary>
    public static Fusions Resolve(bool kernels, bool gptKernels, bool gradientAccumulation, Device device, ScalarType computeDtype,
        (AttentionBackend Ran, IReadOnlyList<string> Notes) attention, bool gptPath)
    {
        var notes = new List<string>();
        bool cuda = device.type == DeviceType.CUDA; // "cuda" without an index is device 0
        bool fp16 = computeDtype == ScalarType.Float16;
        if (kernels && fp16 && cuda) notes.Add("fused kernels off under fp16, libtorch's operators run instead: the executor's kernels are bf16 kernels.");
        bool useKernels = kernels && !fp16 && (!cuda || Enabled(FusedKernels.Probe(Math.Max(device.index, 0)), "fused kernels", notes));
        bool useGpt = useKernels && gptKernels &&
                      (!cuda || !gptPath || Enabled(Fused.GptKernels.Probe(Math.Max(device.index, 0)), "the GPT path's fused kernels (residual add + LayerNorm, embedding + positions)", notes));
        bool useAccumulation = computeDtype is ScalarType.BFloat16 or ScalarType.Float16 && gradientAccumulation &&
                               (!cuda || Enabled(WeightGradient.Probe(device, computeDtype), "gradient-accumulation fusion", notes));
        return new Fusions(useKernels, useAccumulation, [.. notes, .. attention.Notes], attention.Ran, useGpt);
    }

    private static bool Enabled(string? unavailable, string what, List<string> notes)
    {
        if (unavailable is not null) notes.Add($"{what} off, libtorch's operators run instead: {unavailable}");
        return unavailable is null;
    }
}
