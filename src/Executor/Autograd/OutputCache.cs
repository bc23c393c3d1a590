using System.Collections.Concurrent;
using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Autograd;

/// <summary>
/// TorchSharp 0.107's custom autograd functions keep, in their graph node, an empty_like of every output (Node.SaveOutputsInfo,
/// src/TorchSharp/AutogradFunction.cs) until the graph is freed, only to make zeros of that shape when an output's gradient
/// arrives undefined (AutogradContext.MaterializeGrads). That is real memory: a second copy of every output of every
/// custom function (each linear under gradient-accumulation fusion, SwiGLU, the QKV split, the fused norms, the layer
/// markers) from forward to backward. PyTorch keeps only the outputs' metadata (VariableInfo in
/// torch/csrc/autograd/custom_function.h). Here each cached copy is replaced, right after apply, by a one-element tensor
/// expanded to the output's shape: zeros_like of it is a contiguous zeros tensor of the same shape, dtype and device, so
/// undefined gradients are still materialized the same, and the copies' storage is returned. The stand-in is detached from
/// the dispose scope: TorchSharp's copy belongs to the scope active at apply and is freed at its end, so a function applied
/// inside a scope that ends before backward (a model's forward) could not materialize an output's missing gradient (the
/// process aborts in backward); the stand-in lives as long as the node.
/// </summary>
public static class OutputCache
{
    private static readonly FieldInfo? NodeField = typeof(autograd.AutogradContext).GetField("_node", BindingFlags.Instance | BindingFlags.NonPublic);

    /// <summary>Each node type's cache field (one generic node type per function), looked up once.</summary>
    private static readonly ConcurrentDictionary<Type, FieldInfo?> CacheFields = new();

    /// <summary>One zero element per dtype and device, process-lived, that every stand-in expands (a view: no kernel per
    /// output; zeros_like reads only its shape, dtype and device, and nothing writes it).</summary>
    private static readonly ConcurrentDictionary<(ScalarType, string), Tensor> Zeros = new();

    [ThreadStatic] private static autograd.AutogradContext? applying;

    /// <summary>Notes the context of the function whose forward just returned on this thread: the apply in progress (a
    /// function applied inside another's forward has returned before the outer forward does).</summary>
    internal static void Applying(autograd.AutogradContext ctx) => applying = ctx;

    /// <summary>Replaces the output copies of the apply that just returned on this thread; the bytes released.</summary>
    internal static long Release()
    {
        var ctx = applying;
        applying = null;
        return ctx is null ? 0 : Release(ctx);
    }

    /// <summary>Replaces the output copies that <paramref name="ctx"/>'s node holds; the bytes released (0 where they are
    /// already replaced, the function was not recorded for backward, or TorchSharp keeps no such cache).</summary>
    public static long Release(autograd.AutogradContext ctx)
    {
        var node = NodeField?.GetValue(ctx);
        if (node is null || CacheFields.GetOrAdd(node.GetType(), t => t.GetField("_outputCache", BindingFlags.Instance | BindingFlags.NonPublic))
                ?.GetValue(node) is not List<Tensor> cache) return 0;
        long released = 0;
        for (int i = 0; i < cache.Count; i++)
        {
            // A stand-in (every stride 0) or a single element is already as small as it gets.
            if (cache[i] is not Tensor copy || copy.IsInvalid || copy.numel() <= 1 || copy.stride().All(s => s == 0)) continue;
            released += copy.numel() * copy.ElementSize;
            var zero = Zeros.GetOrAdd((copy.dtype, copy.device.ToString()), _ => zeros(1, dtype: copy.dtype, device: copy.device).DetachFromDisposeScope());
            cache[i] = zero.expand(copy.shape).DetachFromDisposeScope();
            copy.Dispose();
        }
        return released;
    }
}
