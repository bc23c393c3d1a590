using Harness.Executor.Native;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// --attention-backend as libtorch's scaled_dot_product_attention runs it: the kernels it may choose from are set per
/// backend (<see cref="SdpBackends"/>), as Megatron sets Transformer Engine's NVTE_*_ATTN switches: flash, FlashAttention-2,
/// and where that cannot take the inputs (fp32, an arbitrary mask) libtorch's memory-efficient kernel, which like it keeps
/// no score matrix (noted); fused, cuDNN's fused attention only; unfused and local, the math kernel (matmuls, softmax and
/// dropout over the whole score matrix, which autograd keeps); auto, every kernel in libtorch's own priority order. Which kernel then runs is
/// libtorch's own answer for this run's attention (<see cref="ScriptedKernels.AttentionKernel"/>), and that is what the
/// record says ran (<see cref="Select"/>).
/// </summary>
public static class AttentionKernel
{
    /// <summary>libtorch's sdp::SDPBackend numbers (aten/src/ATen/native/transformers/sdp_utils_cpp.h).</summary>
    private const long SdpMath = 0, SdpFlash = 1, SdpMemEfficient = 2, SdpCuDnn = 3;

    /// <summary>The backend whose kernel libtorch's number <paramref name="kernel"/> is (<see cref="ScriptedKernels.AttentionKernel"/>):
    /// flash, cuDNN's fused attention, the math kernel as unfused; null for the memory-efficient kernel, which Megatron has no
    /// backend for.</summary>
    public static AttentionBackend? Of(long kernel) => kernel switch
    {
        SdpFlash => AttentionBackend.Flash,
        SdpCuDnn => AttentionBackend.Fused,
        SdpMath => AttentionBackend.Unfused,
        _ => null,
    };

    /// <summary>Exactly the kernel of <paramref name="backend"/> (unfused and local: the math kernel; auto: all of them).</summary>
    public static SdpBackends.Allowed Only(AttentionBackend backend) => backend == AttentionBackend.Auto ? SdpBackends.Allowed.All
        : new(backend == AttentionBackend.Flash, false, AttentionKernels.KeepsScores(backend), backend == AttentionBackend.Fused);

    /// <summary>
    /// Sets the kernels <paramref name="d"/>'s backend allows, for the process, and returns the backend that runs this
    /// model's attention on <paramref name="device"/> with a note for each way it differs from the one asked for. Throws
    /// ArgumentException, one sentence, where no allowed kernel takes the run's attention.
    /// </summary>
    public static (AttentionBackend Ran, IReadOnlyList<string> Notes) Select(ModelSpec m, RunDescription d, Device device, ScalarType dtype)
    {
        bool cuda = device.type == DeviceType.CUDA;
        var asked = d.AttentionBackend;
        var notes = new List<string>();
        // Megatron-core's local attention is the same math as Transformer Engine's unfused one: what runs is recorded as asked.
        var math = asked == AttentionBackend.Local ? AttentionBackend.Local : AttentionBackend.Unfused;
        SdpBackends.Set(asked switch
        {
            AttentionBackend.Flash => Only(asked) with { MemEfficient = true },
            AttentionBackend.Fused when !cuda => Only(AttentionBackend.Unfused),
            _ => Only(asked),
        });
        if (asked == AttentionBackend.Fused && !cuda)
            notes.Add("cuDNN's fused attention is a CUDA kernel: on the CPU libtorch's math attention ran (--attention-backend unfused).");
        double p = m.Dropout ? m.AttentionDropout : 0;
        bool ring = d.ContextParallel > 1 && d.ContextParallelComm is ContextParallelCommType.P2p or ContextParallelCommType.A2aP2p;
        if (ring)
        {
            notes.Add("context parallelism's ring attention runs the executor's own blockwise attention (libtorch's matmuls and an online softmax that keeps the log-sum-exp), not a scaled_dot_product_attention kernel, whatever --attention-backend says.");
            return (asked == AttentionBackend.Fused && !cuda ? math : asked, notes);
        }
        if (!cuda && p > 0)
        {
            // SelfAttention and ContextParallelism draw CPU dropout masks from each rank's own generator, outside any kernel.
            if (!AttentionKernels.KeepsScores(asked) && asked != AttentionBackend.Fused)
                notes.Add("on the CPU, attention with dropout runs as the executor's own matmuls, softmax and dropout (each rank's mask from its own generator): recorded as --attention-backend unfused.");
            return (math, notes);
        }
        switch (Of(Probe(m, d, device, dtype, p, asked)))
        {
            case null:
                notes.Add("libtorch chose its memory-efficient attention kernel, for which Megatron has no backend: recorded as --attention-backend flash, which like it keeps no score matrix.");
                return (AttentionBackend.Flash, notes);
            case AttentionBackend.Unfused:
                if (asked == AttentionBackend.Auto)
                    notes.Add($"libtorch's scaled_dot_product_attention chose its math kernel for this run's attention on the {(cuda ? "GPU" : "CPU")}: recorded as --attention-backend unfused.");
                return (math, notes);
            case var kernel: return (kernel.Value, notes);
        }
    }

    /// <summary>libtorch's kernel for one micro-batch row of this rank's attention: its query heads and key/value groups, its
    /// queries against its keys (the whole sequence's keys, masked, under the all-gather; the whole sequence for 1/c of the
    /// heads under Ulysses), the run's dtype and dropout.</summary>
    private static long Probe(ModelSpec m, RunDescription d, Device device, ScalarType dtype, double p, AttentionBackend asked)
    {
        using var scope = NewDisposeScope();
        long t = d.TensorParallel, c = d.ContextParallel, s = m.SeqLength, hd = m.HeadDim;
        long heads = m.NumAttentionHeads / t, groups = Math.Max(1, m.NumQueryGroups / t);
        bool ulysses = c > 1 && d.ContextParallelComm == ContextParallelCommType.A2a;
        if (ulysses) (heads, groups) = (heads / c, Math.Max(1, groups / c));
        long queries = c > 1 && !ulysses ? s / c : s;
        var q = zeros([1, heads, queries, hd], dtype, device);
        var kv = zeros([1, groups, s, hd], dtype, device);
        var mask = c > 1 && !ulysses ? ones([queries, s], ScalarType.Bool, device).tril() : null;
        try { return ScriptedKernels.AttentionKernel(q, kv, kv, p, mask); }
        catch (Exception e) when (e is System.Runtime.InteropServices.ExternalException or InvalidOperationException && !AllocationFailure.Is(e))
        {
            string first = e.Message.Split('\n')[0];
            throw new ArgumentException($"--attention-backend {AttentionKernels.Name(asked)}: libtorch has no such kernel for this run's attention on this device ({first}); use auto.");
        }
    }
}
