using Harness.Simulator.Specs;

namespace Harness.Executor.Transformer;

/// <summary>
/// The part of the model one pipeline model chunk holds (Megatron's pre_process / post_process and its layer
/// range): layers [FirstLayer, FirstLayer + NumLayers), the embeddings when it is the first chunk of the
/// pipeline, the final norm and output layer (the word embedding when tied) when it is the last.
/// </summary>
public sealed record PipelineChunk(int FirstLayer, int NumLayers, bool PreProcess, bool PostProcess)
{
    public static PipelineChunk Whole(ModelSpec model) => new(0, model.NumLayers, true, true);

    /// <summary>
    /// Chunk <paramref name="chunk"/> of pipeline rank <paramref name="rank"/> with <paramref name="virtualStages"/>
    /// chunks per rank: model stage chunk·pp + rank of pp·v equal stages, as Megatron assigns them (the
    /// interleaved schedule's GPU 0: layers [1, 2] [9, 10] for 16 layers, pp 4, v 2).
    /// </summary>
    public static PipelineChunk Of(ModelSpec model, int pipelineSize, int rank, int virtualStages, int chunk)
    {
        int stages = pipelineSize * virtualStages, stage = chunk * pipelineSize + rank;
        if (model.NumLayers % stages != 0)
            throw new ArgumentException($"--num-layers {model.NumLayers} is not divisible by {pipelineSize} pipeline stages x {virtualStages} model chunks.");
        int perStage = model.NumLayers / stages;
        return new PipelineChunk(stage * perStage, perStage, stage == 0, stage == stages - 1);
    }
}
