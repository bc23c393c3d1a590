using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>Bytes one transformer layer keeps for backward, for one micro-batch on one rank.</summary>
/// <param name="Saved">What autograd keeps with the configured selective / Megatron-Kwai recomputation
/// (full recomputation is applied per layer group by <see cref="Activations.PerLayerKept"/>).</param>
/// <param name="AllTensors">What it would keep with no recomputation at all: what full recomputation
/// re-materializes during backward.</param>
/// <param name="Input">The layer's input (residual stream): all that full recomputation keeps.</param>
public readonly record struct LayerActivationBytes(double Saved, double AllTensors, double Input);

/// <summary>
/// Activation memory counted tensor by tensor: which tensors autograd saves in a GPT block (LayerNorm, GeLU,
/// dropout; Korthikanti et al. 2022, arXiv 2205.05198, section 4.1) and in a Llama block (RMSNorm, SwiGLU,
/// rotary, GQA, flash attention). Sharding: tensors inside the tensor-parallel region are split t ways; the
/// others (norm inputs and outputs, dropout masks on the residual stream) only by sequence parallelism;
/// context parallelism splits the sequence cp ways. Per-token scalars (norm statistics) are left out, as
/// Korthikanti does; flash attention's log-sum-exp (a fp32 per head and token) is counted.
/// </summary>
public static class Activations
{
    /// <summary>Per-layer activation bytes of one micro-batch on one rank.</summary>
    public static LayerActivationBytes Layer(ModelSpec m, ParallelConfig c)
    {
        double e = BytesPerElement(c.Precision);
        double t = c.TensorParallel;
        double tokens = (double)c.MicroBatch * m.SeqLength / c.ContextParallel; // s·b on this context rank
        double sp = c.SequenceParallel ? t : 1;      // residual-stream tensors are split only by SP
        double h = m.HiddenSize, f = m.FfnHiddenSize, kv = (double)m.NumQueryGroups * m.HeadDim;
        double a = m.NumAttentionHeads, s = m.SeqLength;
        var r = c.RecomputeOrNone;
        bool selective = r.Granularity == RecomputeGranularity.Selective;

        double residual = 0, sharded = 0;            // bytes per token, before dividing by sp or t
        double droppedByKwai = 0;                    // sharded-by-t part Kwai drops (SwiGLU outputs)
        double droppedNormOutputs = 0;               // residual part Kwai drops (norm outputs)

        // Attention block.
        residual += e * h;                           // norm 1 input (needed by the norm's backward)
        droppedNormOutputs += e * h;                 // norm 1 output = QKV GEMM input
        sharded += e * (h + kv);                     // Q and K (after rotary: rotary itself saves only cos/sin)
        sharded += e * kv;                           // V
        if (c.FlashAttention)
            sharded += 4 * a;                        // flash attention's fp32 log-sum-exp per head
        else if (!selective)
            // Unfused core attention: softmax output (2·a·s), its dropout mask (a·s) and dropout output (2·a·s)
            // per token: Korthikanti's 5·a·s²·b. Selective recomputation drops exactly these.
            sharded += m.Dropout ? (2 * e + 1) * a * s : e * a * s;
        sharded += e * h;                            // context = output-projection input (also flash's O)
        if (m.Dropout) residual += h;                // attention dropout mask, 1 byte

        // MLP block.
        residual += e * h;                           // norm 2 input
        droppedNormOutputs += e * h;                 // norm 2 output = FC1 input
        if (m.Activation == Activation.SwiGlu)
        {
            // FC1 output (gate and up, 2·ffn) feeds SiLU and the product; Megatron's unfused swiglu also saves
            // SiLU's output (ffn) for the product and the product itself (ffn) as FC2's input. Megatron-Kwai's
            // MLP-activation recompute drops the last two and recomputes them from the FC1 output.
            sharded += e * 2 * f;
            droppedByKwai += e * 2 * f;
        }
        else
        {
            sharded += e * f;                        // GeLU input (FC1 output)
            sharded += e * f;                        // GeLU output = FC2 input
        }
        if (m.Dropout) residual += h;                // MLP dropout mask, 1 byte

        double all = tokens * ((residual + droppedNormOutputs) / sp + (sharded + droppedByKwai) / t);
        double saved = tokens * ((residual + (r.NormOutputs ? 0 : droppedNormOutputs)) / sp
                                 + (sharded + (r.MlpActivation ? 0 : droppedByKwai)) / t);
        if (!c.FlashAttention && selective)
            all += tokens * (m.Dropout ? (2 * e + 1) * a * s : e * a * s) / t;
        double input = tokens * e * h / sp;
        return new LayerActivationBytes(saved, all, input);
    }

    /// <summary>
    /// Average bytes kept per layer of a model chunk of <paramref name="layersPerChunk"/> layers, with full
    /// recomputation applied: uniform keeps one input per group of num-layers layers; block keeps only the
    /// input of the first num-layers layers of the chunk and everything of the others (Megatron's
    /// --recompute-method).
    /// </summary>
    public static double PerLayerKept(LayerActivationBytes layer, RecomputeSpec r, int layersPerChunk)
    {
        if (r.Granularity != RecomputeGranularity.Full) return layer.Saved;
        if (r.Method == RecomputeMethod.Uniform) return layer.Input / r.NumLayers;
        int recomputed = Math.Min(r.NumLayers, layersPerChunk);
        return (recomputed * layer.Input + (layersPerChunk - recomputed) * layer.Saved) / layersPerChunk;
    }

    /// <summary>
    /// Activations re-materialized at once during a backward pass under full recomputation: one group of
    /// num-layers layers (uniform) or one layer (block).
    /// </summary>
    public static double RecomputeWorkspace(LayerActivationBytes layer, RecomputeSpec r) =>
        r.Granularity != RecomputeGranularity.Full ? 0
        : (r.Method == RecomputeMethod.Uniform ? r.NumLayers : 1) * layer.AllTensors;

    public static double BytesPerElement(Precision p) => p == Precision.Fp32 ? 4 : 2;
}
