using Harness.Executor.TensorParallel;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Distributed;

/// <summary>
/// What Megatron's finalize_model_grads (distributed/finalize_model_grads.py) does between the last backward of a
/// step and the optimizer, one collective kind per method.
/// </summary>
public static class FinalizeModelGrads
{
    /// <summary>
    /// All-reduces over the tensor-parallel group the gradients of replicated parameters that each rank only saw
    /// part of: under sequence parallelism (its sequence block; Megatron's _allreduce_layernorm_grads) and under
    /// CAAT-Net partial sync (its own partial sums: "norm weights stay replicated, their gradients are all-reduced").
    /// Coalesced into one flat buffer so it is one call.
    /// </summary>
    public static void AllReduceReplicatedGrads(ShardedTensorParallel tp, nn.Module model)
    {
        var grads = tp.ReplicatedInDecoder(model).Select(p => p.grad).OfType<Tensor>().ToList();
        AllReduceCoalesced(grads, tp.Group);
    }

    /// <summary>Sums the gradients over <paramref name="group"/> through one flat buffer and writes them back.</summary>
    public static void AllReduceCoalesced(IReadOnlyList<Tensor> grads, ICommunicator group, ReduceOp op = ReduceOp.Sum)
    {
        if (grads.Count == 0 || group.Size == 1) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var flat = cat(grads.Select(g => g.reshape(-1)).ToArray());
        group.AllReduce(flat, op);
        long offset = 0;
        foreach (var g in grads)
        {
            g.copy_(flat.narrow(0, offset, g.numel()).view(g.shape));
            offset += g.numel();
        }
    }
}
