using Harness.Simulator.Specs;
using Harness.Executor.Fused;
using Harness.Executor.Offload;
using Harness.Executor.TensorParallel;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// Causal self-attention (Megatron-core transformer/attention.py): a fused QKV projection (column-parallel),
/// rotary positions when the model has them, grouped-query attention (Ainslie et al. 2023) through
/// scaled_dot_product_attention with enable_gqa (flash kernels on GPU read each key/value group for its query heads;
/// nothing is expanded), and the output
/// projection (row-parallel). The QKV output is laid out per query group, [q heads of the group | k | v], as in
/// Megatron, so a contiguous column shard holds whole groups.
/// </summary>
public sealed class SelfAttention : nn.Module<Tensor, Tensor>
{
    private readonly LinearLayer linear_qkv, linear_proj;
    private readonly RotaryEmbedding? rotary;
    private readonly IContextParallel? contextParallel;
    private readonly long localGroups, headsPerGroup, headDim;
    private readonly bool selectiveRecompute, fused;
    private readonly double attentionDropout;
    private readonly DropoutRng? dropout;

    /// <param name="layer">The layer's number in the serial model, which names its weights (<see cref="WeightKey"/>).</param>
    public SelfAttention(TransformerConfig config, RotaryEmbedding? rotary, int layer) : base(nameof(SelfAttention))
    {
        var m = config.Model;
        var tp = config.TensorParallel;
        headDim = m.HeadDim;
        headsPerGroup = m.NumAttentionHeads / m.NumQueryGroups;
        localGroups = m.NumQueryGroups / tp.WorldSize;
        linear_qkv = tp.ColumnParallelLinear(m.HiddenSize, m.QkvWidth, config.Bias, config.Init(new(WeightRole.LinearQkv, layer)));
        linear_proj = tp.RowParallelLinear(m.HiddenSize, m.HiddenSize, config.Bias, config.OutputInit(new(WeightRole.LinearProj, layer)));
        this.rotary = rotary;
        contextParallel = config.ContextParallel;
        selectiveRecompute = config.RecomputeOrNone.Granularity == RecomputeGranularity.Selective;
        fused = config.UseFusedKernels;
        (attentionDropout, dropout) = (config.AttentionDropout, config.Dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => forward(x, recomputedNorm: null);

    /// <param name="recomputedNorm">When given, x is the norm's input and the norm runs inside the QKV linear, which keeps x
    /// rather than the norm's output (Megatron-Kwai's --kaimm-recompute-norm: backward recomputes the norm).</param>
    public Tensor forward(Tensor x, Func<Tensor, Tensor>? recomputedNorm)
    {
        using var scope = NewDisposeScope();
        var projected = linear_qkv.forward(x, recomputedNorm); // the full sequence, also when x is a sequence-parallel block
        long b = projected.shape[0], s = projected.shape[1], heads = localGroups * headsPerGroup;
        Tensor q, k, v;
        if (fused && rotary is not null && contextParallel is null && FusedKernels.Applies(projected))
        {
            var (cos, signedSin) = rotary.Tables;
            (q, k, v) = QkvRotaryFunction.Apply(projected, cos, signedSin, localGroups, headsPerGroup, headDim);
            (q, k, v) = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
        }
        else (q, k, v) = SplitRotated(projected, x.device);
        // Attention saves Q, K and V (views of the projection, Q and K copies once rotated), the projection its input.
        (q, k, v) = (SavedActivations.Save(q), SavedActivations.Save(k), SavedActivations.Save(v));
        var context = selectiveRecompute
            ? CheckpointFunction.Apply(CoreAttention, dropout, q, k, v)
            : CoreAttention(new[] { q, k, v });
        var merged = SavedActivations.Save(context.transpose(1, 2).reshape(b, s, heads * headDim));
        return linear_proj.forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>q [b, heads, s, d] and k, v [b, groups, s, d] from the projection's views, q and k rotated (libtorch's operators).</summary>
    private (Tensor Q, Tensor K, Tensor V) SplitRotated(Tensor projected, Device device)
    {
        long b = projected.shape[0], s = projected.shape[1], heads = localGroups * headsPerGroup;
        var qkv = projected.view(b, s, localGroups, headsPerGroup + 2, headDim);
        var parts = qkv.split(new[] { headsPerGroup, 1, 1 }, dim: 3);
        Tensor q = parts[0], k = parts[1];                                   // views of [b, s, groups, ·, d]
        if (rotary is not null)
        {
            // Rotated straight from the projection's views; the results are contiguous, so the reshapes below are free.
            var positions = contextParallel?.Positions(s, device);
            q = rotary.Apply(q, positions);
            k = rotary.Apply(k, positions);
        }
        q = q.reshape(b, s, heads, headDim).transpose(1, 2);                // [b, heads, s, d]
        k = k.reshape(b, s, localGroups, headDim).transpose(1, 2);          // [b, groups, s, d]
        return (q, k, parts[2].squeeze(3).transpose(1, 2));
    }

    /// <summary>
    /// dropout(softmax(QKᵀ/√d + causal mask))·V, each key/value group serving its query heads; under context parallelism
    /// over every rank's keys and values, which travel as groups.
    /// </summary>
    private Tensor CoreAttention(Tensor[] qkv)
    {
        double p = DropoutRng.Rate(dropout, attentionDropout);
        return contextParallel is not null ? contextParallel.Attention(qkv[0], qkv[1], qkv[2], p, dropout)
            : p > 0 && dropout!.NextModelParallel() is { } own ? AttentionWithDropout.Apply(qkv[0], qkv[1], qkv[2], p, own)
            : ScriptedKernels.CausalAttention(qkv[0], qkv[1], qkv[2], p);
    }
}
