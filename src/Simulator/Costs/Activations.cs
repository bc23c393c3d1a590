using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>Bytes one transformer layer keeps for backward, for one micro-batch on one rank.</summary>
/// <param name="Saved">What autograd keeps with the configured selective / Megatron-Kwai recomputation
/// (full recomputation is applied per layer group by <see cref="Activations.PerLayerKept"/>).</param>
/// <param name="AllTensors">What it would keep with no recomputation at all: what full recomputation
/// re-materializes during backward.</param>
/// <param name="Input">The layer's input (residual stream): all that full recomputation keeps.</param>
public readonly record struct LayerActivationBytes(double Saved, double AllTensors, double Input);

/// <summary>One tensor a transformer layer materializes in forward, on one rank for one micro-batch.</summary>
/// <param name="Bytes">Its size.</param>
/// <param name="Storage">The allocation it views: larger than <paramref name="Bytes"/> for a strided slice of a wider
/// output (the halves of the SwiGLU FC1 output, torch.chunk along the last dimension).</param>
/// <param name="Kept">Whether autograd keeps it for backward under the configured selective / Megatron-Kwai
/// recomputation; otherwise backward recomputes it.</param>
public readonly record struct LayerTensor(double Bytes, double Storage, bool Kept)
{
    public bool Strided => Storage > Bytes;
}

/// <summary>
/// Activation memory counted tensor by tensor: which tensors autograd saves in a GPT block (LayerNorm, GeLU,
/// dropout; Korthikanti et al. 2022, arXiv 2205.05198, section 4.1) and in a Llama block (RMSNorm, SwiGLU,
/// rotary, GQA, flash attention). Sharding: tensors inside the tensor-parallel region are split t ways; the
/// others (norm inputs and outputs, dropout masks on the residual stream) only by sequence parallelism;
/// context parallelism splits the sequence cp ways. Per-token scalars (norm statistics) are left out, as
/// Korthikanti does; flash attention's log-sum-exp (a fp32 per head and token) is counted. The attention backend is the
/// resolved one (<see cref="AttentionKernels.Resolve"/>, which <see cref="Schedule.PipelineCosts.Build"/> applies).
/// </summary>
public static class Activations
{
    /// <summary>The most tensors <see cref="LayerTensors"/> lists for one layer.</summary>
    public const int MaxLayerTensors = 18;

    /// <summary>
    /// Writes the tensors one layer materializes in forward into <paramref name="into"/> (at least
    /// <see cref="MaxLayerTensors"/> long), in the order forward creates them, and returns how many.
    /// </summary>
    public static int LayerTensors(ModelSpec m, RunDescription c, Span<LayerTensor> into)
    {
        double e = BytesPerElement(c.Precision);
        double tokens = (double)c.MicroBatch * m.SeqLength / c.ContextParallel; // s·b on this context rank
        double residual = tokens / (c.SequenceParallel ? c.TensorParallel : 1); // residual-stream tensors: split only by SP
        double sharded = tokens / c.TensorParallel;
        double h = m.HiddenSize, f = m.FfnHiddenSize, kv = (double)m.NumQueryGroups * m.HeadDim;
        double a = m.NumAttentionHeads, s = m.SeqLength;
        var r = c.RecomputeOrNone;
        bool selective = r.Granularity == RecomputeGranularity.Selective;
        int n = 0;

        // Attention block.
        Add(into, ref n, residual * e * h);                       // norm 1 input (needed by the norm's backward)
        Add(into, ref n, residual * e * h, !r.NormOutputs);       // norm 1 output = QKV GEMM input; Kwai's norm recompute drops it
        Add(into, ref n, sharded * e * h);                        // Q (after rotary: rotary itself saves only cos/sin)
        // Ulysses (--cp-comm-type a2a): attention keeps Q, K, V and O after their all-to-alls, all s tokens of 1/c of the
        // heads (as many bytes as s/c tokens of every head), and its log-sum-exp per head and token likewise; its O is a
        // tensor of its own beside the output projection's input, which the all-to-all back makes
        // (AttnFuncWithCPAndQKVOA2A saves q_part, k_part, v_part, out_part; Transformer Engine at d0067d0). Under a2a+p2p
        // the ring's attention keeps the all-to-all's Q, K, V and its own O likewise (AttnFuncWithCPAndKVP2P).
        bool ulysses = c.ContextParallelLevels.AllToAll > 1; // a2a, and a2a+p2p's first level (its ring keeps the same)
        if (c.ContextParallel > 1 && !ulysses)
            // Megatron-Kwai's context parallelism keeps this rank's shard of the all-gathered [K; V] as one tensor
            // (ATC'24 artifact, megatron/core/context_parallel/dattention.py, ShardSaveForBackwardFunction).
            Add(into, ref n, sharded * e * 2 * kv);
        else
        {
            Add(into, ref n, sharded * e * kv);                   // K
            Add(into, ref n, sharded * e * kv);                   // V
        }
        if (!AttentionKernels.KeepsScores(c.AttentionBackend))
            Add(into, ref n, sharded * 4 * a);                    // flash's fp32 log-sum-exp (cuDNN's softmax stats) per head
        else
        {
            // Unfused core attention: softmax output (2·a·s), its dropout mask (a·s) and dropout output (2·a·s)
            // per token: Korthikanti's 5·a·s²·b. Selective recomputation drops exactly these.
            Add(into, ref n, sharded * e * a * s, !selective);
            if (m.AttentionDropout > 0)
            {
                Add(into, ref n, sharded * a * s, !selective);
                Add(into, ref n, sharded * e * a * s, !selective);
            }
        }
        Add(into, ref n, sharded * e * h);                        // context = output-projection input (also flash's O)
        if (ulysses) Add(into, ref n, sharded * e * h);           // attention's own O, head-sharded
        // The hidden dropout masks, a byte per element, unless the executor drops inside its residual add + norm, which keeps
        // none (ComputeTime.FusedDropoutAdds: the attention's always, the MLP's in the share of layers whose next add fuses).
        double fusedDrops = ComputeTime.FusedDropoutAdds(m, c);
        if (m.HiddenDropout > 0 && fusedDrops == 0) Add(into, ref n, residual * h);      // attention dropout mask, 1 byte

        // MLP block.
        Add(into, ref n, residual * e * h);                       // norm 2 input
        Add(into, ref n, residual * e * h, !r.NormOutputs);       // norm 2 output = FC1 input
        if (m.Activation == Activation.SwiGlu)
        {
            // FC1 output (gate and up, 2·ffn) and the product silu(gate)·up (ffn), FC2's input. Megatron's fused SwiGLU
            // (fused_bias_swiglu.py) keeps FC1's output whole and recomputes the product's operands in backward. Its
            // unfused form (torch.chunk, then silu(x[0]) * x[1]) keeps the two halves as strided views and SiLU's output
            // (ffn) too. Megatron-Kwai's MLP-activation recompute keeps the FC1 output whole (FC2's linear saves it) and
            // recomputes what follows it: SiLU's output and the product.
            double fc1 = sharded * e * 2 * f, half = fc1 / 2;
            if (r.MlpActivation || c.FusedSwiGlu)
                Add(into, ref n, fc1);
            else
            {
                Add(into, ref n, half, storage: fc1);
                Add(into, ref n, half, storage: fc1);
            }
            if (!c.FusedSwiGlu) Add(into, ref n, half, !r.MlpActivation);  // SiLU output
            Add(into, ref n, half, !r.MlpActivation);                     // product = FC2 input
        }
        else
        {
            Add(into, ref n, sharded * e * f);                    // GeLU input (FC1 output)
            Add(into, ref n, sharded * e * f);                    // GeLU output = FC2 input
        }
        if (m.HiddenDropout > 0 && fusedDrops < 2) Add(into, ref n, residual * h * Math.Min(1, 2 - fusedDrops)); // MLP dropout mask, 1 byte
        return n;
    }

    private static void Add(Span<LayerTensor> into, ref int n, double bytes, bool kept = true, double storage = 0) =>
        into[n++] = new LayerTensor(bytes, Math.Max(bytes, storage), kept);

    /// <summary>Per-layer activation bytes of one micro-batch on one rank.</summary>
    public static LayerActivationBytes Layer(ModelSpec m, RunDescription c)
    {
        Span<LayerTensor> tensors = stackalloc LayerTensor[MaxLayerTensors];
        return Layer(m, c, tensors[..LayerTensors(m, c, tensors)]);
    }

    /// <summary>Per-layer activation bytes from the layer's <see cref="LayerTensors"/>.</summary>
    public static LayerActivationBytes Layer(ModelSpec m, RunDescription c, ReadOnlySpan<LayerTensor> tensors)
    {
        double saved = 0, all = 0;
        foreach (var t in tensors)
        {
            all += t.Bytes;
            if (t.Kept) saved += t.Bytes;
        }
        double input = (double)c.MicroBatch * m.SeqLength / c.ContextParallel * BytesPerElement(c.Precision) * m.HiddenSize
                       / (c.SequenceParallel ? c.TensorParallel : 1);
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
