using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// How attention's score and context matmuls (QK^T and softmax·V) are counted.
/// Megatron (Narayanan et al. 2021, eq. 3) counts them over the full s×s square; Megatron-Kwai (ATC'24
/// artifact) counts the causal half. The choice changes the reported TFLOP/s and MFU, not the time,
/// so reproductions use the convention of the paper they compare with.
/// </summary>
public enum AttentionFlopCounting { Causal, Full }

/// <summary>
/// The one FLOP counter, shared by the simulator's MFU and the executor's measured MFU so that the two
/// compare by construction. A matmul of (m×k)·(k×n) is 2·m·k·n FLOPs; backward is twice forward.
/// </summary>
public static class Flops
{
    /// <summary>Forward FLOPs per token of one transformer layer's GEMMs (QKV, output projection, MLP).</summary>
    public static double LayerGemmForwardPerToken(ModelSpec m)
    {
        double h = m.HiddenSize, f = m.FfnHiddenSize;
        double qkv = 2 * h * m.QkvWidth;          // fused QKV: h -> h + 2·g·h/a (REFERENCE.md, GQA)
        double proj = 2 * h * h;                   // attention output projection
        double mlp = m.Activation == Activation.SwiGlu
            ? 3 * 2 * h * f                        // gate, up and down projections
            : 2 * 2 * h * f;                       // up and down projections
        return qkv + proj + mlp;
    }

    /// <summary>Forward FLOPs per token of QK^T and softmax·V: 4·s·h over the full square, half when causal.</summary>
    public static double AttentionForwardPerToken(ModelSpec m, AttentionFlopCounting counting)
    {
        double full = 4.0 * m.SeqLength * m.HiddenSize;
        return counting == AttentionFlopCounting.Full ? full : full / 2;
    }

    /// <summary>Forward FLOPs per token of the output layer (logits): 2·h·V.</summary>
    public static double LogitsForwardPerToken(ModelSpec m) => 2.0 * m.HiddenSize * m.VocabSize;

    /// <summary>Forward FLOPs per token of one whole layer.</summary>
    public static double LayerForwardPerToken(ModelSpec m, AttentionFlopCounting counting) =>
        LayerGemmForwardPerToken(m) + AttentionForwardPerToken(m, counting);

    /// <summary>
    /// Model FLOPs per token, forward and backward, recomputation not counted:
    /// 3·[L·(layer forward) + 2·h·V]. For GPT with full counting this is Narayanan's
    /// 72·L·h²·(1 + s/(6h)) + 6·h·V; for Llama with causal counting, Kwai's 3·[L·(8h² + 6·h·ffn + 2·s·h) + 2·h·V].
    /// </summary>
    public static double ModelFlopsPerToken(ModelSpec m, AttentionFlopCounting counting = AttentionFlopCounting.Causal) =>
        3 * (m.NumLayers * LayerForwardPerToken(m, counting) + LogitsForwardPerToken(m));

    /// <summary>
    /// Extra forward FLOPs per token that recomputation repeats in backward. Full recomputation repeats every
    /// recomputed layer's forward (the output layer is not recomputed: Narayanan's 96·B·s·L·h² formula);
    /// selective repeats the core attention; Megatron-Kwai's norm/activation recompute repeats only
    /// element-wise work (no matmul FLOPs).
    /// </summary>
    public static double RecomputeFlopsPerToken(ModelSpec m, RunDescription c, AttentionFlopCounting counting = AttentionFlopCounting.Causal)
    {
        var r = c.RecomputeOrNone;
        return r.Granularity switch
        {
            RecomputeGranularity.Full => RecomputedLayers(m, c) * LayerForwardPerToken(m, counting),
            RecomputeGranularity.Selective => m.NumLayers * AttentionForwardPerToken(m, counting),
            _ => 0,
        };
    }

    /// <summary>Hardware FLOPs per token: model FLOPs plus what recomputation repeats.</summary>
    public static double HardwareFlopsPerToken(ModelSpec m, RunDescription c, AttentionFlopCounting counting = AttentionFlopCounting.Causal) =>
        ModelFlopsPerToken(m, counting) + RecomputeFlopsPerToken(m, c, counting);

    /// <summary>
    /// Layers of a model chunk of <paramref name="layersInChunk"/> layers that full recomputation recomputes. Uniform
    /// recomputes every layer (it keeps only each group's input); block recomputes the first num-layers of the chunk.
    /// </summary>
    public static int RecomputedLayers(RunDescription c, int layersInChunk)
    {
        var r = c.RecomputeOrNone;
        if (r.Granularity != RecomputeGranularity.Full) return 0;
        return r.Method == RecomputeMethod.Uniform ? layersInChunk : Math.Min(r.NumLayers, layersInChunk);
    }

    /// <summary>Layers of the whole model that full recomputation recomputes: every model chunk's on every pipeline rank.</summary>
    public static int RecomputedLayers(ModelSpec m, RunDescription c)
    {
        int total = 0;
        for (int rank = 0; rank < c.PipelineParallel; rank++)
            for (int chunk = 0; chunk < c.VirtualStages(m); chunk++)
                total += RecomputedLayers(c, c.LayersInChunk(m, rank, chunk));
        return total;
    }
}
