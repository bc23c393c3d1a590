using Harness.Executor.Native;
using TorchSharp;
using Harness.Executor.Autograd;
using Harness.Executor.Distributed;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// CAAT-Net's partial synchronization (Tensor-Parallelism with Partially Synchronized Activations, arXiv
/// 2506.19645, and its Megatron-LM fork), replacing g after the row-parallel linears: of the h hidden channels,
/// the first k = floor(p·h) are all-reduced; the others keep this rank's own partial sum scaled by √t, so ranks
/// hold different activations there. Backward applies the same map to the gradient (its all-reduce in float32,
/// as the fork does). With k = h this is exactly g's forward all-reduce, with the backward all-reduce that f
/// would have done moved here; the rest of the scheme (no f before column-parallel linears, one f before the
/// first layer, norm-weight gradients all-reduced) lives in <see cref="ShardedTensorParallel"/> and
/// DataParallel's gradient finalization.
/// </summary>
public sealed class PartialAllReduce : GuardedSingleTensorFunction<PartialAllReduce>
{
    public override string Name => "partial_all_reduce";

    /// <summary>Channels that are all-reduced for sync factor <paramref name="p"/>: floor(p·h).</summary>
    public static long SynchronizedChannels(double p, long hidden) => (long)Math.Floor(p * hidden + 1e-9);

    public static Tensor Apply(Tensor x, ICommunicator tp, long synchronizedChannels) =>
        apply(x, tp, synchronizedChannels);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var tp = (ICommunicator)vars[1];
        long k = (long)vars[2];
        ctx.save_data("tp", tp);
        ctx.save_data("k", k);
        return Map((Tensor)vars[0], tp, k, x => x.dtype);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var tp = (ICommunicator)ctx.get_data("tp");
        long k = (long)ctx.get_data("k");
        return GradientHandOver.Return(grad, Map(grad, tp, k, _ => ScalarType.Float32), null, null);
    }

    /// <summary>[all-reduce(x[..., :k]) | √t·x[..., k:]], the all-reduce done in <paramref name="reduceType"/>.</summary>
    private static Tensor Map(Tensor x, ICommunicator tp, long k, Func<Tensor, ScalarType> reduceType)
    {
        long h = x.shape[^1];
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>(2);
        if (k > 0)
        {
            var head = x.narrow(-1, 0, k).to(reduceType(x)).contiguous().clone();
            tp.AllReduce(head);
            parts.Add(head.to(x.dtype));
        }
        if (k < h) parts.Add(x.narrow(-1, k, h - k).Times(Math.Sqrt(tp.Size)));
        var result = parts.Count == 1 ? parts[0].contiguous() : cat(parts, -1);
        return result.MoveToOuterDisposeScope();
    }
}
