using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>Bytes of weights, gradients and optimizer states one rank holds.</summary>
public readonly record struct ModelStateBytes(double Weights, double Gradients, double Optimizer)
{
    public double Total => Weights + Gradients + Optimizer;

    public static ModelStateBytes operator +(ModelStateBytes a, ModelStateBytes b) =>
        new(a.Weights + b.Weights, a.Gradients + b.Gradients, a.Optimizer + b.Optimizer);
}

/// <summary>
/// Parameters per rank and the bytes they cost. Mixed precision with Adam (REFERENCE.md): bf16/fp16 weights
/// 2 B, fp32 main gradients 4 B (Megatron accumulates gradients in fp32), fp32 master weights, Adam m and v
/// 12 B: 18 B per parameter. Megatron's distributed optimizer (ZeRO stage 1) shards the 12 B over the
/// data-parallel group (with context parallelism: data x context ranks, which hold the same weights):
/// 6 + 12/d B. ZeRO 2 also shards the gradients (2 + 16/d B), ZeRO 3 the weights (18/d B), and both hold a working set
/// beyond their shards (<see cref="ZeroWorkingSet"/>). fp32 training: 4 B weights, 4 B gradients, 8 B for m and v. Megatron's
/// --grad-reduce-in-bf16 keeps 2 B gradients; its precision-aware optimizer stores the states smaller (<see cref="AdamStates"/>);
/// --optimizer sgd keeps 8 B of them, 4 B without momentum (<see cref="OptimizerStates"/>). Megatron-FSDP keeps bf16 main
/// gradients (16 B replicated) and shards by its strategy's stage, with a working set of its own (<see cref="FsdpWorkingSet"/>).
/// </summary>
public static class ModelState
{
    /// <summary>Parameters of one transformer layer on one tensor-parallel rank: GEMM weights and the
    /// column-parallel biases are split t ways; norms and row-parallel biases are replicated.</summary>
    public static double LayerParametersPerRank(ModelSpec m, int tensorParallel)
    {
        double h = m.HiddenSize;
        bool bias = m.Normalization == Normalization.LayerNorm; // GPT has biased linears, Llama none
        double replicated = (m.Normalization == Normalization.LayerNorm ? 4 * h : 2 * h) + (bias ? 2 * h : 0);
        return (m.ParametersPerLayer - replicated) / tensorParallel + replicated;
    }

    /// <summary>Embedding parameters on the first pipeline stage: the vocabulary-parallel word table plus the
    /// replicated learned position table.</summary>
    public static double EmbeddingParametersPerRank(ModelSpec m, int tensorParallel) =>
        (double)m.VocabSize * m.HiddenSize / tensorParallel
        + (m.PositionEmbedding == PositionEmbedding.Learned ? (double)m.PositionTableRows * m.HiddenSize : 0);

    /// <summary>Output-layer parameters on the last stage: its own vocabulary-parallel weight, or, when tied
    /// and the pipeline has more than one stage, Megatron's copy of the word embedding; plus the final norm.</summary>
    public static double OutputParametersPerRank(ModelSpec m, int tensorParallel, int pipelineParallel)
    {
        double output = !m.TiedEmbeddings || pipelineParallel > 1 ? (double)m.VocabSize * m.HiddenSize / tensorParallel : 0;
        return output + m.FinalNormParameters;
    }

    /// <summary>Parameters held by pipeline rank <paramref name="pipelineRank"/> (all its model chunks).</summary>
    public static double RankParameters(ModelSpec m, RunDescription c, int pipelineRank)
    {
        int p = c.PipelineParallel;
        double layers = c.LayersOnRank(m, pipelineRank);
        return layers * LayerParametersPerRank(m, c.TensorParallel) + EndParameters(m, c, pipelineRank);
    }

    /// <summary>Parameters outside the transformer layers on pipeline rank <paramref name="pipelineRank"/>: the embeddings
    /// on the first, the final norm and output layer on the last.</summary>
    public static double EndParameters(ModelSpec m, RunDescription c, int pipelineRank)
    {
        int p = c.PipelineParallel;
        return (pipelineRank == 0 ? EmbeddingParametersPerRank(m, c.TensorParallel) : 0)
               + (pipelineRank == p - 1 ? OutputParametersPerRank(m, c.TensorParallel, p) : 0);
    }

    /// <summary>Weights, gradients and optimizer states of <paramref name="parameters"/> parameters.</summary>
    public static ModelStateBytes Bytes(double parameters, RunDescription c)
    {
        double d = c.DataParallel * c.ContextParallel;
        bool fp32 = c.Precision == Precision.Fp32;
        double weights = fp32 ? 4 : 2, grads = DataParallelComm.GradientBytesPerParameter(c), optimizer = OptimizerStates.BytesPerParameter(c);
        if (c.ZeroStage >= 1) optimizer /= d;
        if (c.ZeroStage >= 2) grads /= d;
        if (c.ZeroStage >= 3) weights /= d;
        return new ModelStateBytes(parameters * weights, parameters * grads, parameters * optimizer);
    }

    /// <summary>Weights, gradients and optimizer states pipeline rank <paramref name="pipelineRank"/> holds at its peak:
    /// its shards of them and ZeRO's working set.</summary>
    public static ModelStateBytes RankBytes(ModelSpec m, RunDescription c, int pipelineRank) =>
        Bytes(RankParameters(m, c, pipelineRank), c) + ZeroWorkingSet(m, c, pipelineRank);

    /// <summary>
    /// What ZeRO 2 and 3 hold beyond their shards during a backward, as DeepSpeed allocates it (edaa722). Gradients: the
    /// reduce buckets, reduce_bucket_size elements each in the parameter dtype, allocated whole whatever the model's size:
    /// stage 2 one, two under overlap_comm so that one fills while the other is reduced (zero/stage_1_and_2.py,
    /// setup_buckets); stage 3 one (zero/stage3.py). Weights (stage 3): the gathered full weights in use, about two layers
    /// (the one computing and the one being prefetched, zero/partitioned_param_coordinator.py) and, on the ranks that
    /// hold them, the embedding or the output layer, gathered at the turn from forward to backward where activations peak.
    /// </summary>
    public static ModelStateBytes ZeroWorkingSet(ModelSpec m, RunDescription c, int pipelineRank)
    {
        if (c.ZeroStage < 2) return default;
        if (c.Fsdp is { } fsdp) return FsdpWorkingSet(m, c, fsdp, pipelineRank);
        double e = Activations.BytesPerElement(c.Precision);
        int bucketCount = c.ZeroStage == 2 && c.OverlapOrDefault.GradientReduce ? 2 : 1;
        double buckets = bucketCount * ZeroMicroBatchComm.ReduceBucketSize(c) * e;
        if (c.ZeroStage < 3) return new ModelStateBytes(0, buckets, 0);
        int p = c.PipelineParallel;
        double layers = Math.Min(2, c.LayersOnRank(m, pipelineRank)) * LayerParametersPerRank(m, c.TensorParallel);
        double ends = Math.Max(pipelineRank == 0 ? EmbeddingParametersPerRank(m, c.TensorParallel) : 0,
                               pipelineRank == p - 1 ? OutputParametersPerRank(m, c.TensorParallel, p) : 0);
        return new ModelStateBytes((layers + ends) * e, buckets, 0);
    }

    /// <summary>
    /// What Megatron-FSDP's optim_grads and optim_grads_params hold beyond their shards at the turn from forward to
    /// backward (param_and_grad_buffer.py): the unsharded gradients of the layers being reduce-scattered
    /// (<see cref="MegatronFsdp.ReducingLayers"/>, in the main gradients' dtype, each allocated per layer and freed once its
    /// reduce-scatter is done; on the last stage the output layer's too, the backward's first) and, under optim_grads_params, the gathered layers (<see cref="MegatronFsdp.GatheredLayers"/>,
    /// within one model chunk: each chunk is wrapped on its own) and the embedding, final norm and output layer whole, which
    /// version 1 keeps gathered through the step (<see cref="Bytes"/> counted their shard). The embeddings' unsharded
    /// gradients exist only at the backward's end, after the activations are freed.
    /// </summary>
    private static ModelStateBytes FsdpWorkingSet(ModelSpec m, RunDescription c, MegatronFsdp fsdp, int pipelineRank)
    {
        double layer = LayerParametersPerRank(m, c.TensorParallel);
        int chunkLayers = c.LayersPerVirtualStage ?? c.LayersOnRank(m, pipelineRank);
        // The output layer's gradient is the backward's first, made at the turn where activations peak.
        double output = pipelineRank == c.PipelineParallel - 1 ? OutputParametersPerRank(m, c.TensorParallel, c.PipelineParallel) : 0;
        double gradients = (MegatronFsdp.ReducingLayers(chunkLayers) * layer + output) * DataParallelComm.GradientBytesPerParameter(c);
        if (c.ZeroStage < 3) return new ModelStateBytes(0, gradients, 0);
        double e = Activations.BytesPerElement(c.Precision), d = c.DataParallel * c.ContextParallel;
        double weights = fsdp.GatheredLayers(layer, chunkLayers, c.DdpBucketSize) * layer * e
                         + EndParameters(m, c, pipelineRank) * e * (1 - 1 / d);
        return new ModelStateBytes(weights, gradients, 0);
    }

    /// <summary>Bytes per parameter: 18 replicated, 6 + 12/d with the distributed optimizer (bf16).</summary>
    public static double BytesPerParameter(RunDescription c) => Bytes(1, c).Total;
}
