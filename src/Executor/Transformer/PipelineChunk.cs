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
    /// Chunk <paramref name="chunk"/> of pipeline rank <paramref name="rank"/>: its layers as Megatron assigns them
    /// (<see cref="RunDescription.LayersInChunk"/> and <see cref="RunDescription.FirstLayerOfChunk"/>: the interleaved
    /// schedule's GPU 0 holds layers [1, 2] [9, 10] for 16 layers, pp 4, v 2; uneven stages give the first and last
    /// ranks their own counts, and a chunk may hold none beside the embedding or the loss that counts as a layer); the embedding on the first chunk of rank 0, the output layer on the last chunk of the last rank.
    /// The caller passes a description that <see cref="RunDescription.Validate"/> accepts.
    /// </summary>
    public static PipelineChunk Of(ModelSpec model, RunDescription description, int rank, int chunk)
    {
        int p = description.PipelineParallel, v = description.VirtualStages(model);
        return new PipelineChunk(description.FirstLayerOfChunk(model, rank, chunk), description.LayersInChunk(model, rank, chunk),
            rank == 0 && chunk == 0, rank == p - 1 && chunk == v - 1);
    }
}
