namespace Harness.Simulator.Specs;

/// <summary>
/// How the transformer layers are split over pipeline ranks and their model chunks, as Megatron-core builds them
/// (megatron/core/transformer/transformer_block.py get_num_layers_to_build and transformer_layer.py
/// get_transformer_layer_offset, NVIDIA/Megatron-LM d98e8a6), and Megatron's rules for the split (TransformerConfig's
/// checks and training/arguments.py). The one place layers per stage are computed: the simulator, the search and the
/// executor use it.
/// </summary>
public sealed partial record RunDescription
{
    /// <summary>Whether --decoder-first-pipeline-num-layers or --decoder-last-pipeline-num-layers splits the layers unevenly.</summary>
    public bool UnevenPipeline => LayersInFirstPipelineStage is not null || LayersInLastPipelineStage is not null;

    /// <summary>Whether the embedding or the loss counts as a layer in the split (--account-for-*-in-pipeline-split).</summary>
    public bool AccountsForEndsInPipelineSplit => AccountForEmbeddingInPipelineSplit || AccountForLossInPipelineSplit;

    /// <summary>Whether pipeline stages may hold different numbers of layers (uneven stages, or the ends counted as layers).</summary>
    public bool PipelineStagesDiffer => UnevenPipeline || AccountsForEndsInPipelineSplit;

    /// <summary>What the even split divides: the layers, plus one for the embedding and one for the loss where they count.</summary>
    public int LayersInPipelineSplit(ModelSpec model) =>
        model.NumLayers + (AccountForEmbeddingInPipelineSplit ? 1 : 0) + (AccountForLossInPipelineSplit ? 1 : 0);

    /// <summary>Model chunks per pipeline rank (v); 1 without interleaving. arguments.py: the layers of a pipeline stage
    /// (the embedding and loss counted where they count) over --num-layers-per-virtual-pipeline-stage.</summary>
    public int VirtualStages(ModelSpec model) =>
        LayersPerVirtualStage is int l && l > 0 ? LayersInPipelineSplit(model) / (PipelineParallel * l) : 1;

    /// <summary>
    /// Transformer layers in model chunk <paramref name="chunk"/> of pipeline rank <paramref name="pipelineRank"/>. Uneven
    /// stages: the first and last ranks hold what their flags say and the middle ranks split the rest evenly (they exclude
    /// --num-layers-per-virtual-pipeline-stage, so each rank has one chunk). Otherwise every one of the p·v chunks holds
    /// an equal share of the layers, the embedding and loss counted where they count, less the embedding on the first
    /// chunk of rank 0 and the loss on the last chunk of the last rank.
    /// </summary>
    public int LayersInChunk(ModelSpec model, int pipelineRank, int chunk = 0)
    {
        if (UnevenPipeline)
        {
            if (pipelineRank == 0 && LayersInFirstPipelineStage is int first) return first;
            if (pipelineRank == PipelineParallel - 1 && LayersInLastPipelineStage is int last) return last;
            var (middleLayers, middleStages) = MiddleStages(model);
            return middleStages > 0 ? middleLayers / middleStages : 0;
        }
        int v = VirtualStages(model);
        int layers = LayersInPipelineSplit(model) / (PipelineParallel * v);
        if (AccountForEmbeddingInPipelineSplit && pipelineRank == 0 && chunk == 0) layers--;
        if (AccountForLossInPipelineSplit && pipelineRank == PipelineParallel - 1 && chunk == v - 1) layers--;
        return layers;
    }

    /// <summary>The first layer (0-based) of model chunk <paramref name="chunk"/> of pipeline rank <paramref name="pipelineRank"/>:
    /// the layers of the virtual stages before it, which run chunk by chunk and within a chunk rank by rank (virtual stage
    /// chunk·p + rank).</summary>
    public int FirstLayerOfChunk(ModelSpec model, int pipelineRank, int chunk)
    {
        int offset = 0;
        for (int c = 0; c <= chunk; c++)
            for (int r = 0; r < (c < chunk ? PipelineParallel : pipelineRank); r++)
                offset += LayersInChunk(model, r, c);
        return offset;
    }

    /// <summary>Transformer layers pipeline rank <paramref name="pipelineRank"/> holds, over all its model chunks.</summary>
    public int LayersOnRank(ModelSpec model, int pipelineRank)
    {
        int layers = 0;
        for (int c = 0; c < VirtualStages(model); c++) layers += LayersInChunk(model, pipelineRank, c);
        return layers;
    }

    /// <summary>Transformer layers each pipeline rank holds, rank 0 first.</summary>
    public IEnumerable<int> LayersPerStage(ModelSpec model) =>
        Enumerable.Range(0, PipelineParallel).Select(rank => LayersOnRank(model, rank));

    /// <summary>The distinct numbers of layers the model chunks hold, chunks without layers (a standalone embedding or loss
    /// stage) aside.</summary>
    public IEnumerable<int> ChunkSizes(ModelSpec model)
    {
        int v = VirtualStages(model);
        return Enumerable.Range(0, PipelineParallel * v).Select(stage => LayersInChunk(model, stage % PipelineParallel, stage / PipelineParallel))
            .Where(n => n > 0).Distinct();
    }

    /// <summary>Layers and ranks left between the uneven first and last stages.</summary>
    private (int Layers, int Stages) MiddleStages(ModelSpec model) =>
        (model.NumLayers - (LayersInFirstPipelineStage ?? 0) - (LayersInLastPipelineStage ?? 0),
         PipelineParallel - (LayersInFirstPipelineStage is null ? 0 : 1) - (LayersInLastPipelineStage is null ? 0 : 1));

    /// <summary>The layers as the even split counts them, in words: "--num-layers 30", or with the embedding or loss counted.</summary>
    private string SplitLayersInWords(ModelSpec model) =>
        !AccountsForEndsInPipelineSplit ? $"--num-layers {model.NumLayers}"
        : $"--num-layers {model.NumLayers} with the {(AccountForEmbeddingInPipelineSplit && AccountForLossInPipelineSplit ? "embedding and loss" : AccountForEmbeddingInPipelineSplit ? "embedding" : "loss")} counted as layers ({LayersInPipelineSplit(model)})";

    /// <summary>Megatron's rules for the split, each reason in one sentence; whether the split is valid.</summary>
    private bool ValidatePipelineSplit(ModelSpec model, List<string> e)
    {
        int before = e.Count;
        if (UnevenPipeline && AccountsForEndsInPipelineSplit)
            e.Add("--account-for-embedding-in-pipeline-split and --account-for-loss-in-pipeline-split cannot be combined with --decoder-first-pipeline-num-layers or --decoder-last-pipeline-num-layers (Megatron's TransformerConfig refuses them together).");
        else if (UnevenPipeline)
            ValidateUnevenStages(model, e);
        else if (LayersInPipelineSplit(model) % PipelineParallel != 0)
            e.Add($"{SplitLayersInWords(model)} is not divisible by --pipeline-model-parallel-size {PipelineParallel}; give the first or last stage its own number of layers (--decoder-first-pipeline-num-layers, --decoder-last-pipeline-num-layers) to split the rest evenly.");
        if (LayersPerVirtualStage is int l && !UnevenPipeline)
        {
            int layers = LayersInPipelineSplit(model);
            if (l < 1)
                e.Add($"--num-layers-per-virtual-pipeline-stage is {l}; it must be at least 1.");
            else if (layers % ((long)PipelineParallel * l) != 0)
                e.Add($"{SplitLayersInWords(model)} is not divisible by pipeline {PipelineParallel} x layers per virtual stage {l}.");
            else if (PipelineParallel < 2)
                e.Add("--num-layers-per-virtual-pipeline-stage needs --pipeline-model-parallel-size of at least 2.");
            else if (layers / (PipelineParallel * l) < 2)
                e.Add($"--num-layers-per-virtual-pipeline-stage {l} gives one model chunk per pipeline rank; interleaving needs at least 2.");
            else if ((long)MicroBatch * DataParallel <= int.MaxValue && GlobalBatch % (MicroBatch * DataParallel) == 0 && NumMicroBatches % PipelineParallel != 0)
                e.Add($"the interleaved schedule needs the number of micro-batches ({NumMicroBatches}) to be a multiple of --pipeline-model-parallel-size {PipelineParallel}.");
        }
        return e.Count == before;
    }

    /// <summary>Megatron's rules for uneven stages.</summary>
    private void ValidateUnevenStages(ModelSpec model, List<string> e)
    {
        if (LayersInFirstPipelineStage is < 1)
            e.Add($"--decoder-first-pipeline-num-layers is {LayersInFirstPipelineStage}; it must be at least 1.");
        if (LayersInLastPipelineStage is < 1)
            e.Add($"--decoder-last-pipeline-num-layers is {LayersInLastPipelineStage}; it must be at least 1.");
        if (LayersInFirstPipelineStage is < 1 || LayersInLastPipelineStage is < 1) return;
        // arguments.py derives the virtual pipeline size of uneven stages only from --num-virtual-stages-per-pipeline-rank.
        if (LayersPerVirtualStage is not null)
            e.Add("--num-layers-per-virtual-pipeline-stage cannot be combined with --decoder-first-pipeline-num-layers or --decoder-last-pipeline-num-layers: Megatron asks for --num-virtual-stages-per-pipeline-rank with uneven stages, which Harness does not model.");
        var (layers, stages) = MiddleStages(model);
        if (stages < 0)
            e.Add($"--decoder-first-pipeline-num-layers and --decoder-last-pipeline-num-layers name two stages but --pipeline-model-parallel-size is {PipelineParallel}.");
        else if (layers < 0)
            e.Add($"the first and last pipeline stages' {model.NumLayers - layers} layers exceed --num-layers {model.NumLayers}.");
        else if ((layers > 0) != (stages > 0))
            e.Add($"{layers} layers remain for {stages} middle pipeline stages; the first and last stages' layers must leave some layers for every middle stage and none without one.");
        else if (stages > 0 && layers % stages != 0)
            e.Add($"the {layers} layers between the first and last pipeline stages are not divisible by the {stages} middle stages.");
    }
}
