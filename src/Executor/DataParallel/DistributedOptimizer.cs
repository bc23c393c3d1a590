using Harness.Executor.Distributed;
using Harness.Executor.Optimizer;
using static TorchSharp.torch;

namespace Harness.Executor.DataParallel;

/// <summary>
/// Megatron's distributed optimizer (ZeRO stage 1; optimizer/distrib_optimizer.py): each data-parallel rank owns
/// one contiguous 1/d shard of the flat buffer. A step reduce-scatters the float32 gradients (each rank gets the
/// average of its shard), clips by the global norm, runs AdamW on its shard of float32 master weights and moments
/// only, and all-gathers the updated weights into every rank's model. Master weights and moments take 12/d bytes
/// per parameter instead of 12 (REFERENCE.md: 6 + 12/d with bf16 weights and float32 gradients; here 8 + 12/d, as
/// the buffer also keeps one micro-batch's bf16 gradients before folding them into float32). The buffer then holds
/// no full master copy of its own.
/// </summary>
public sealed class DistributedOptimizer : IOptimizerState, IDisposable
{
    private readonly ParamAndGradBuffer buffer;
    private readonly ICommunicator dataParallel;
    private readonly GradientNorm norm;
    private readonly long shard, length, padded;

    public AdamWOptions Options { get; }
    public long Step { get; set; }
    public long Start { get; }
    public Tensor Master { get; }
    public Tensor ExpAvg { get; }
    public Tensor ExpAvgSq { get; }

    public DistributedOptimizer(ParamAndGradBuffer buffer, ICommunicator dataParallel, AdamWOptions options, GradientNorm norm)
    {
        (this.buffer, this.dataParallel, Options, this.norm) = (buffer, dataParallel, options, norm);
        int d = dataParallel.Size;
        shard = (buffer.Count + d - 1) / d;
        padded = shard * d;
        Start = Math.Min(buffer.Count, dataParallel.Rank * shard);
        length = Math.Min(buffer.Count, Start + shard) - Start;
        Master = zeros(length, dtype: ScalarType.Float32, device: buffer.Params.device);
        ReloadMaster();
        ExpAvg = zeros(length, dtype: ScalarType.Float32, device: buffer.Params.device);
        ExpAvgSq = zeros(length, dtype: ScalarType.Float32, device: buffer.Params.device);
    }

    /// <summary>Takes this rank's shard of the master weights from the model's weights (at start and after loading).</summary>
    public void ReloadMaster()
    {
        using var _ = no_grad();
        Master.copy_(buffer.Params.narrow(0, Start, length));
    }

    /// <summary>Reduce-scatter, clip, AdamW on this rank's shard, all-gather. Returns the global gradient norm (device scalar).</summary>
    public Tensor ClipAndStep(double lr)
    {
        Step++;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var grads = Padded(buffer.MainGrads);
        var myGrads = zeros(shard, dtype: grads.dtype, device: grads.device);
        dataParallel.ReduceScatter(grads, myGrads, ReduceOp.Avg);
        var g = myGrads.narrow(0, 0, length);
        var total = norm.Compute(g, Start);
        AdamW.Clip(g, total, Options);
        long decayed = Math.Clamp(buffer.DecayedCount - Start, 0, length);
        AdamW.Update(Master, g, ExpAvg, ExpAvgSq, decayed, Options, lr, Step);
        CopyMasterToParams();
        return total.MoveToOuterDisposeScope();
    }

    /// <summary>Every rank's weights from the owners' shards of master weights, in the model's dtype (an all-gather).</summary>
    public void CopyMasterToParams()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var mine = zeros(shard, dtype: buffer.Params.dtype, device: buffer.Params.device);
        mine.narrow(0, 0, length).copy_(Master);
        var gathered = empty(padded, dtype: buffer.Params.dtype, device: buffer.Params.device);
        dataParallel.AllGather(mine, gathered);
        buffer.Params.copy_(gathered.narrow(0, 0, buffer.Count));
    }

    private Tensor Padded(Tensor flat)
    {
        if (padded == flat.numel()) return flat;
        var p = zeros(padded, dtype: flat.dtype, device: flat.device);
        p.narrow(0, 0, flat.numel()).copy_(flat);
        return p;
    }

    public void Dispose()
    {
        Master.Dispose();
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }
}
