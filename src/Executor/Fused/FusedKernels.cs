using Harness.Executor.Native;
using Harness.Executor.Native.Cuda;
using static Harness.Executor.Fused.KernelModule;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The executor's own CUDA kernels (kernels.cu, compiled by NVRTC at run time): SwiGLU, the QKV split with rotary
/// positions, the residual add fused with RMSNorm (<see cref="AddNormKernels"/>), cross-entropy over bf16 logits and the
/// AdamW step, each one pass over HBM where libtorch's operators make several. They run on the legacy default stream, in order with libtorch's kernels. Every entry point takes contiguous CUDA tensors;
/// the callers keep libtorch's operators for everything else (CPU, other dtypes), which is also the reference the
/// kernels are checked against (`harness kernel-check`).
/// </summary>
public static unsafe class FusedKernels
{
    private static readonly KernelModule Module = new("harness_fused", "add_norm.cuh", "kernels.cu");

    /// <summary>Compiles and loads the kernels on <paramref name="device"/>; null when they are ready, else why not,
    /// in one sentence (no NVRTC, no driver, a compile error).</summary>
    public static string? Probe(int device) => Module.Probe(device, "swiglu_forward_v8");

    /// <summary>The run-time compiler that built the kernels, and where it was found (after <see cref="Probe"/> succeeded).</summary>
    public static string Compiler => $"NVRTC {Nvrtc.Version} from {Nvrtc.Location}";

    /// <summary>Where the fused kernels can take over: contiguous-able bf16 tensors on a GPU.</summary>
    public static bool Applies(Tensor t) => t.is_cuda && t.dtype == ScalarType.BFloat16;

    /// <summary>y = silu(gate) · up of x = [gate | up] (last dimension 2f), into y [.., f].</summary>
    public static void SwiGluForward(Tensor x, Tensor y)
    {
        IntPtr px = TensorPointer.Of(x), py = TensorPointer.Of(y);
        long f = y.shape[^1], rows = y.numel() / f;
        int v = Vector(f, px, py);
        void** args = stackalloc void*[] { &px, &py, &rows, &f };
        Module.Launch(x, $"swiglu_forward_v{v}", Blocks(rows * f / v), Threads, args);
    }

    /// <summary>dx [.., 2f] from dy [.., f] and the forward's input x.</summary>
    public static void SwiGluBackward(Tensor dy, Tensor x, Tensor dx)
    {
        IntPtr pdy = TensorPointer.Of(dy), px = TensorPointer.Of(x), pdx = TensorPointer.Of(dx);
        long f = dy.shape[^1], rows = dy.numel() / f;
        int v = Vector(f, pdy, px, pdx);
        void** args = stackalloc void*[] { &pdy, &px, &pdx, &rows, &f };
        Module.Launch(x, $"swiglu_backward_v{v}", Blocks(rows * f / v), Threads, args);
    }

    /// <summary>s = x + r (with <paramref name="drop"/>, x + dropout(r)) and y = RMSNorm(s)·gamma over the last dimension h,
    /// with each row's 1/sqrt(mean(s²) + eps) (float32 [rows]).</summary>
    public static void AddRmsNormForward(Tensor x, Tensor r, Tensor gamma, double epsilon, DropoutDraw? drop, Tensor s, Tensor y, Tensor rstd) =>
        AddNormKernels.Forward(Module, x, r, gamma, null, epsilon, drop, s, y, null, rstd);

    /// <summary>d(x + r) (bf16, into <paramref name="dsum"/>) from the gradients of y and of s, and d gamma (bf16 [h]), from
    /// the forward's s, gamma and statistics; with the forward's <paramref name="drop"/>, r's gradient into <paramref name="dr"/>.</summary>
    public static void AddRmsNormBackward(Tensor dy, Tensor ds, Tensor s, Tensor gamma, Tensor rstd, DropoutDraw? drop, Tensor dsum, Tensor? dr, Tensor dgamma) =>
        AddNormKernels.Backward(Module, dy, ds, s, gamma, null, rstd, drop, dsum, dr, dgamma, null);

    /// <summary>Per-row loss and log-sum-exp (float32 [rows]) of bf16 logits [rows, vocab] against int64 labels [rows].</summary>
    public static void CrossEntropyForward(Tensor logits, Tensor labels, Tensor loss, Tensor lse)
    {
        IntPtr px = TensorPointer.Of(logits), pl = TensorPointer.Of(labels), ploss = TensorPointer.Of(loss), plse = TensorPointer.Of(lse);
        long vocab = logits.shape[^1];
        int v = Vector(vocab, px);
        void** args = stackalloc void*[] { &px, &pl, &ploss, &plse, &vocab };
        Module.Launch(logits, $"cross_entropy_forward_v{v}", (uint)(logits.numel() / vocab), Threads, args);
    }

    /// <summary>d logits (bf16 [rows, vocab]) from the per-row loss gradient (float32 [rows]).</summary>
    public static void CrossEntropyBackward(Tensor logits, Tensor labels, Tensor lse, Tensor dloss, Tensor dlogits)
    {
        IntPtr px = TensorPointer.Of(logits), pl = TensorPointer.Of(labels), plse = TensorPointer.Of(lse),
            pd = TensorPointer.Of(dloss), pdx = TensorPointer.Of(dlogits);
        long vocab = logits.shape[^1];
        int v = Vector(vocab, px, pdx);
        void** args = stackalloc void*[] { &px, &pl, &plse, &pd, &pdx, &vocab };
        Module.Launch(logits, $"cross_entropy_backward_v{v}", (uint)(logits.numel() / vocab), Threads, args);
    }

    /// <summary>A [b, s, n, d] bf16 tensor as the QKV kernel reads it: its address and element strides (the last is 1).</summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private readonly struct Strided(Tensor t)
    {
        public readonly IntPtr Data = TensorPointer.Of(t);
        public readonly long Batch = t.stride(0), Sequence = t.stride(1), Head = t.stride(2);
    }

    /// <summary>
    /// Splits the QKV projection [b, s, groups·(hpg + 2)·d] into q [b, s, groups·hpg, d] and k, v [b, s, groups, d],
    /// rotating q and k by the rows 0..s-1 of the cos and sin± tables ([≥ s, d], bf16).
    /// </summary>
    public static void QkvRotaryForward(Tensor projected, Tensor cos, Tensor signedSin, Tensor q, Tensor k, Tensor v)
    {
        IntPtr px = TensorPointer.Of(projected), pc = TensorPointer.Of(cos), ps = TensorPointer.Of(signedSin),
            pq = TensorPointer.Of(q), pk = TensorPointer.Of(k), pv = TensorPointer.Of(v);
        long b = q.shape[0], seq = q.shape[1], groups = k.shape[2], hpg = q.shape[2] / groups, d = q.shape[3], tokens = b * seq;
        // 8-wide when each half of a head starts 16-byte aligned.
        int v8 = Vector(d / 2, px, pc, ps, pq, pk, pv);
        void** args = stackalloc void*[] { &px, &pc, &ps, &pq, &pk, &pv, &tokens, &seq, &groups, &hpg, &d };
        Module.Launch(q, $"qkv_rotary_forward_v{v8}", Blocks(tokens * groups * (hpg + 2) * d / 2 / v8), Threads, args);
    }

    /// <summary>The projection's gradient [b, s, groups·(hpg + 2)·d] from dq, dk, dv ([b, s, n, d], any strides with a
    /// unit last stride), through the transposed rotation.</summary>
    public static void QkvRotaryBackward(Tensor dq, Tensor dk, Tensor dv, Tensor cos, Tensor signedSin, Tensor dprojected)
    {
        Strided sq = new(dq), sk = new(dk), sv = new(dv);
        IntPtr pc = TensorPointer.Of(cos), ps = TensorPointer.Of(signedSin), pdx = TensorPointer.Of(dprojected);
        long b = dq.shape[0], seq = dq.shape[1], groups = dk.shape[2], hpg = dq.shape[2] / groups, d = dq.shape[3], tokens = b * seq;
        bool stridesAligned = new[] { dq, dk, dv }.All(t => t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0);
        int v8 = stridesAligned ? Vector(d / 2, sq.Data, sk.Data, sv.Data, pc, ps, pdx) : 1;
        void** args = stackalloc void*[] { &sq, &sk, &sv, &pc, &ps, &pdx, &tokens, &seq, &groups, &hpg, &d };
        Module.Launch(dq, $"qkv_rotary_backward_v{v8}", Blocks(tokens * groups * (hpg + 2) * d / 2 / v8), Threads, args);
    }

    /// <summary>The scalars of one AdamW step, computed in double on the host as the reference path's scalars are.</summary>
    public readonly record struct AdamWScalars(float Clip, float DecayFactor, float OneMinusBeta1, float Beta2, float OneMinusBeta2,
        float InverseSqrtBias2, float Epsilon, float StepSize);

    /// <summary>
    /// One clipped AdamW step over flat float32 weights, gradients and moments (gradients read, not scaled in place);
    /// when <paramref name="param"/> is given, the new weights are also written into it in bf16. Weight decay on the first
    /// <paramref name="decayed"/> elements; <paramref name="norm"/> is the gradients' global norm (a device scalar).
    /// </summary>
    public static void AdamW(Tensor w, Tensor g, Tensor m, Tensor v, Tensor? param, long decayed, Tensor norm, AdamWScalars s)
    {
        IntPtr pw = TensorPointer.Of(w), pg = TensorPointer.Of(g), pm = TensorPointer.Of(m), pv = TensorPointer.Of(v),
            pp = param is null ? IntPtr.Zero : TensorPointer.Of(param), pn = TensorPointer.Of(norm);
        long n = w.numel();
        float clip = s.Clip, decay = s.DecayFactor, b1 = s.OneMinusBeta1, b2 = s.Beta2, ob2 = s.OneMinusBeta2,
            bias2 = s.InverseSqrtBias2, eps = s.Epsilon, step = s.StepSize;
        void** args = stackalloc void*[] { &pw, &pg, &pm, &pv, &pp, &n, &decayed, &pn, &clip, &decay, &b1, &b2, &ob2, &bias2, &eps, &step };
        Module.Launch(w, "adamw_step", Blocks(n), Threads, args);
    }
}
