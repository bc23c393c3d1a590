using Harness.Executor.Native;
using TorchSharp;
using Harness.Executor.Autograd;
using Harness.Executor.Distributed;
using Harness.Executor.Transformer;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.ContextParallel;

/// <summary>
/// Ring attention (Liu et al. 2023; Megatron's context parallelism with cp_comm_type "p2p"): instead of gathering
/// every rank's keys and values, each rank passes its block around the ring, cp steps in all, and merges the
/// partial attention of each block with its log-sum-exp (online softmax), so only two blocks are resident at a
/// time. Backward runs the ring again: the gradients of each key/value block travel with it and arrive back at
/// their owner after the last step. Computed in float32 from explicit scores (TorchSharp's fused attention gives
/// no log-sum-exp); masked by global position like <see cref="ContextParallelism.Attention"/>. Under grouped-query
/// attention the blocks travel as their groups' keys and values: queries are viewed per group, [b, g, heads/g, s, d],
/// so each group's keys serve its heads by broadcasting, and the heads' key/value gradients are summed per group.
/// Inputs q [b, heads, s/cp, d], k and v [b, groups, s/cp, d]; output [b, heads, s/cp, d].
/// </summary>
public sealed class RingAttention : GuardedMultiTensorFunction<RingAttention>
{
    public override string Name => "ring_attention";

    /// <param name="dropout">Attention dropout on the probabilities, and the streams it draws from: one draw, each block's
    /// mask seeded from its key and the block's source rank, so backward regenerates the masks forward used.</param>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, ContextParallelism cp, double dropout = 0, DropoutRng? rng = null) =>
        apply(q, k, v, cp, new BlockDropout(dropout, rng, dropout > 0 ? rng!.NextModelParallelKey() : 0))[0];

    /// <summary>Dropout of one ring attention: probability, streams and the draw's key.</summary>
    private sealed record BlockDropout(double P, DropoutRng? Rng, long Key)
    {
        /// <summary>Rank <paramref name="source"/>'s block of the probabilities, dropped and scaled (unchanged without dropout).</summary>
        public Tensor Apply(Tensor probabilities, int source) =>
            P <= 0 ? probabilities : DropoutOp.Drawn(probabilities, P, Rng!.Seed(Key, source + 1));
    }

    protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var (q, k, v, cp, dropout) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (ContextParallelism)vars[3], (BlockDropout)vars[4]);
        using var scope = NewDisposeScope();
        var group = cp.Group;
        var q32 = Grouped(q, k.shape[1]);
        var queryPositions = cp.Positions(q.shape[2], q.device);
        Tensor? output = null, lse = null;
        var (keys, values) = (Block(k), Block(v));
        for (int step = 0; step < group.Size; step++)
        {
            int source = Source(group, step);
            var (scores, _) = Scores(q32, keys, queryPositions, source, cp);
            var blockLse = scores.logsumexp(-1);                                          // [b, g, h/g, sq]
            // Fully masked rows give 0. Dropout acts on the normalized probabilities, so each block's dropped
            // probabilities merge by the same log-sum-exp weights as undropped ones.
            var blockOut = MatrixProduct.Of(dropout.Apply(scores.softmax(-1).nan_to_num(0), source), values);
            if (output is null) (output, lse) = (blockOut, blockLse);                      // own block: every query sees itself
            else
            {
                var merged = logaddexp(lse!, blockLse);
                output = output.mul((lse! - merged).exp().unsqueeze(-1)).add_(blockOut.mul((blockLse - merged).exp().unsqueeze(-1)), One);
                lse = merged;
            }
            if (step < group.Size - 1) (keys, values) = (Pass(group, keys), Pass(group, values));
        }
        ctx.save_for_backward([q, k, v, output!.MoveToOuterDisposeScope(), lse!.MoveToOuterDisposeScope()]);
        ctx.save_data("cp", cp);
        ctx.save_data("dropout", dropout);
        return [output!.reshape(q.shape).to(q.dtype).MoveToOuterDisposeScope()];
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var (q, k, v, output, lse) = (saved[0], saved[1], saved[2], saved[3], saved[4]);
        var cp = (ContextParallelism)ctx.get_data("cp");
        var dropout = (BlockDropout)ctx.get_data("dropout");
        var group = cp.Group;
        var q32 = Grouped(q, k.shape[1]);
        var dOut = Grouped(grads[0], k.shape[1]);
        var delta = (dOut * output).sum(-1, keepdim: true);                                // D = rowsum(dO ∘ O)
        var queryPositions = cp.Positions(q.shape[2], q.device);
        var dq = zeros_like(q32);
        var (keys, values) = (Block(k), Block(v));
        var (dKeys, dValues) = (zeros_like(keys), zeros_like(values));
        for (int step = 0; step < group.Size; step++)
        {
            int source = Source(group, step);
            var (scores, scale) = Scores(q32, keys, queryPositions, source, cp);
            var p = (scores - lse.unsqueeze(-1)).exp();                                     // masked entries: exp(-inf) = 0
            // With dropout, O = (M ∘ P)·V/(1 − p): V's gradient goes through the dropped probabilities and P's through the
            // mask; D = rowsum(dO ∘ O) is still rowsum(dP ∘ P) (Dao et al. 2022, FlashAttention's backward with dropout).
            dValues.add_(MatrixProduct.Of(dropout.Apply(p, source).transpose(-2, -1), dOut).sum(2, keepdim: true), One); // the group's heads, summed
            using var scaleScalar = scale.ToScalar();   // held until the call returns (HeldScalars says why)
            var dScores = p.mul(dropout.Apply(MatrixProduct.Of(dOut, values.transpose(-2, -1)), source).sub_(delta)).mul_(scaleScalar);
            dq.add_(MatrixProduct.Of(dScores, keys), One);
            dKeys.add_(MatrixProduct.Of(dScores.transpose(-2, -1), q32).sum(2, keepdim: true), One);
            // The block and its gradients move on; after the last step the gradients reach their owner.
            if (step < group.Size - 1) (keys, values) = (Pass(group, keys), Pass(group, values));
            (dKeys, dValues) = (Pass(group, dKeys), Pass(group, dValues));
        }
        return GradientHandOver.Return(grads, dq.reshape(q.shape).to(q.dtype).MoveToOuterDisposeScope(), dKeys.squeeze(2).to(k.dtype).MoveToOuterDisposeScope(),
            dValues.squeeze(2).to(v.dtype).MoveToOuterDisposeScope(), null, null);
    }

    /// <summary>Queries (or their gradients) [b, heads, s, d] in float32 as [b, groups, heads/groups, s, d].</summary>
    private static Tensor Grouped(Tensor x, long groups) =>
        x.to(ScalarType.Float32).reshape(x.shape[0], groups, x.shape[1] / groups, x.shape[2], x.shape[3]);

    /// <summary>A key or value block [b, groups, s, d] in float32 as [b, groups, 1, s, d], which broadcasts over the group's heads.</summary>
    private static Tensor Block(Tensor x) => x.to(ScalarType.Float32).unsqueeze(2).contiguous();

    /// <summary>The rank whose block this rank holds at <paramref name="step"/> of the ring.</summary>
    private static int Source(ICommunicator group, int step) => (group.Rank - step + group.Size) % group.Size;

    /// <summary>Scaled scores of the queries against rank <paramref name="source"/>'s keys, −inf where the key is in the future.</summary>
    private static (Tensor Scores, double Scale) Scores(Tensor q, Tensor keys, Tensor queryPositions, int source, ContextParallelism cp)
    {
        double scale = 1 / Math.Sqrt(q.shape[^1]);
        var keyPositions = tensor(ContextParallelism.GlobalPositions(keys.shape[^2] * cp.Group.Size, source, cp.Group.Size), device: q.device);
        var future = keyPositions.unsqueeze(0).gt(queryPositions.unsqueeze(1));
        using Scalar scaleScalar = scale.ToScalar(), masked = double.NegativeInfinity.ToScalar(); // held (HeldScalars says why)
        return (MatrixProduct.Of(q, keys.transpose(-2, -1)).mul_(scaleScalar).masked_fill_(future, masked), scale);
    }

    /// <summary>Sends <paramref name="block"/> to the next rank and receives the previous rank's.</summary>
    private static Tensor Pass(ICommunicator group, Tensor block)
    {
        var received = empty_like(block);
        using (group.Group())
        {
            group.Send(block, (group.Rank + 1) % group.Size);
            group.Recv(received, (group.Rank - 1 + group.Size) % group.Size);
        }
        return received;
    }
}
