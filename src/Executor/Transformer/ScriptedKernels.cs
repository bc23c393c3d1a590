using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// libtorch operators TorchSharp does not bind, reached through a small TorchScript compilation unit (compiled once,
/// from the source below): aten::rms_norm (one fused kernel forward and backward on CUDA instead of five),
/// scaled_dot_product_attention with enable_gqa (flash attention reads each key/value group for its query heads,
/// no expanded copies; also under a mask, for context parallelism), and the rotary and SwiGLU element-wise chains, which TorchScript's GPU fuser (NNC, on by
/// default in libtorch) compiles into fused kernels, forward and backward, after a profiling run.
/// Autograd runs through scripted functions as through any operator.
/// </summary>
public static class ScriptedKernels
{
    private const string Source = @"
def rms_norm(x: Tensor, weight: Tensor, eps: float):
    return torch.rms_norm(x, [x.size(-1)], weight, eps)

def causal_attention(q: Tensor, k: Tensor, v: Tensor, p: float):
    return torch.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=True)

def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float):
    return torch.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, enable_gqa=True)

def causal_attention_kernel(q: Tensor, k: Tensor, v: Tensor, p: float):
    return torch._fused_sdp_choice(q, k, v, None, p, True, enable_gqa=True)

def masked_attention_kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float):
    return torch._fused_sdp_choice(q, k, v, mask, p, False, enable_gqa=True)

def rotary(x: Tensor, cos: Tensor, signed_sin: Tensor, half: int):
    first, second = x.split(half, -1)
    return x * cos + torch.cat([second, first], -1) * signed_sin

def swiglu(x: Tensor):
    gate, up = x.chunk(2, -1)
    return torch.silu(gate) * up
";

    private static readonly Lazy<jit.CompilationUnit> Unit = new(() => jit.compile(Source));

    /// <summary>
    /// Calls a function of the unit with the calling thread's graph optimizer set for <paramref name="x"/>'s device
    /// (<see cref="GraphExecutorOptimization"/>: off on the CPU, where it would make results depend on earlier calls).
    /// Numbers go in as Scalars this call owns until the function has returned: given a double or a long, TorchSharp
    /// makes a temporary Scalar and passes only its native handle, so a garbage collection before libtorch reads it
    /// finalizes it and libtorch reads freed memory (seen under concurrent in-process ranks: "Expected false to be
    /// true" from c10::Scalar::toLong, ending that rank's step).
    /// </summary>
    private static Tensor Invoke(string name, Tensor x, params object[] rest) => (Tensor)InvokeAny(name, x, rest);

    private static object InvokeAny(string name, Tensor x, params object[] rest)
    {
        GraphExecutorOptimization.For(x.device_type);
        var scalars = new List<Scalar>();
        object Owned(object argument)
        {
            if (argument is not (double or long)) return argument;
            var scalar = argument is double d ? d.ToScalar() : ((long)argument).ToScalar();
            scalars.Add(scalar);
            return scalar;
        }
        try { return Unit.Value.invoke(name, [x, .. rest.Select(Owned)]); }
        finally { scalars.ForEach(s => s.Dispose()); }
    }

    /// <summary>x / sqrt(mean(x²) + eps) · weight over the last dimension (Zhang and Sennrich 2019).</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, double eps) => Invoke("rms_norm", x, weight, eps);

    /// <summary>Causal softmax(QKᵀ/√d)·V, with dropout <paramref name="dropout"/> on the probabilities inside the kernel
    /// (libtorch's generator draws the mask); k and v may have fewer heads (groups) than q.</summary>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v, double dropout = 0) =>
        Invoke("causal_attention", q, k, v, dropout);

    /// <summary>softmax(QKᵀ/√d)·V where <paramref name="mask"/> is true (attended), with dropout as in
    /// <see cref="CausalAttention"/>; k and v may have fewer heads (groups) than q.</summary>
    public static Tensor MaskedAttention(Tensor q, Tensor k, Tensor v, Tensor mask, double dropout = 0) =>
        Invoke("masked_attention", q, k, v, mask, dropout);

    /// <summary>The kernel <see cref="CausalAttention"/> (or, given <paramref name="mask"/>, <see cref="MaskedAttention"/>) runs
    /// for these inputs under the allowed kernels (<see cref="Native.SdpBackends"/>): libtorch's own choice
    /// (aten::_fused_sdp_choice, its sdp::SDPBackend: 0 math, 1 flash, 2 memory-efficient, 3 cuDNN). Throws when no allowed
    /// kernel takes them.</summary>
    public static long AttentionKernel(Tensor q, Tensor k, Tensor v, double dropout, Tensor? mask = null)
    {
        // A TorchScript int comes back as a Scalar.
        using var kernel = (Scalar)(mask is null ? InvokeAny("causal_attention_kernel", q, k, v, dropout) : InvokeAny("masked_attention_kernel", q, k, v, mask, dropout));
        return kernel.ToInt64();
    }

    /// <summary>
    /// x·cos + rotate(x)·sin±, rotate(x) = [second half | first half] (rotate-half rotary). Written with split and cat
    /// rather than roll: TorchScript's GPU fuser (NNC) fuses cat with the products, so forward and backward run as
    /// fused kernels (caat-1b on an H100: 2157 -> 2123 ms per step).
    /// </summary>
    public static Tensor Rotary(Tensor x, Tensor cos, Tensor signedSin, long half) => Invoke("rotary", x, cos, signedSin, half);

    /// <summary>silu(gate)·up of the two halves of the last dimension.</summary>
    public static Tensor SwiGlu(Tensor x) => Invoke("swiglu", x);
}
