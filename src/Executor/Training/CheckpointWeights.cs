using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>
/// The serial model's full weights from a checkpoint of any layout (<see cref="Checkpoint"/>, <see cref="DistributedCheckpoint"/>):
/// every tensor x pipeline rank folder holds its flat buffer of float32 master weights (in data-parallel shards under the
/// distributed optimizer, re-cut here as a resume re-cuts them); the buffer holds the rank's model chunks' parameters in
/// <see cref="ParamAndGradBuffer.InBufferOrder{T}"/>, each its tensor-parallel part (<see cref="WeightSplit"/>), so the rank's
/// parameters follow from the serial model's and the chunks <see cref="PipelineChunk.Of"/> gives it. The last stage's copy of a
/// tied word embedding is the first stage's (the run keeps them equal); the first stage's is read.
/// </summary>
public static class CheckpointWeights
{
    /// <summary>The serial model's parameters, by serial name in its module order, with their full shapes (the tables padded as
    /// <paramref name="padded"/> says), from the model itself built on libtorch's meta device: no memory, no drawing.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> SerialShapes(ModelSpec padded)
    {
        using var model = new GptModel(new TransformerConfig(padded, new Device(TorchSharp.DeviceType.META), ScalarType.Float32, SerialTensorParallel.Instance));
        return model.named_parameters().Select(p => (p.name, p.parameter.shape)).ToList();
    }

    /// <summary>
    /// The newest checkpoint under <paramref name="root"/> as the serial model's full float32 weights, by serial name in the
    /// model's order. <paramref name="padded"/> is the model with its tables padded as the run that saved it padded them and
    /// <paramref name="description"/> that run's layout. Throws InvalidDataException (or FileNotFoundException) naming what
    /// does not match or is missing.
    /// </summary>
    public static IReadOnlyList<(string Name, Tensor Weight)> Read(string root, ModelSpec padded, RunDescription description)
    {
        var (dir, meta) = Checkpoint.Latest(root);
        var layout = CheckpointLayout.Of(description, padded);
        Checkpoint.RequireCompatible(dir, meta, padded.Name, layout);
        if (!Enum.TryParse<ScalarType>(meta.Dtype, out var dtype))
            throw new InvalidDataException($"The checkpoint in {dir} names its master weights' type '{meta.Dtype}', which is no libtorch type; the checkpoint is damaged.");
        var serial = SerialShapes(padded);
        // Every view, cast and part is the scope's until libtorch returns (an export runs outside any scope, where a bare
        // temporary can be finalized mid-call); only the joined weights leave it.
        using var scope = NewDisposeScope();
        int t = layout.TensorParallel;
        var parts = serial.ToDictionary(s => s.Name, _ => new Tensor?[t]);
        long total = 0;
        for (int p = 0; p < layout.PipelineParallel; p++)
        {
            var held = Enumerable.Range(0, layout.VirtualStages)
                .SelectMany(c => serial.Where(s => Holds(PipelineChunk.Of(padded, description, p, c), s.Name, padded)))
                .Select(s => (s.Name, Shape: WeightSplit.Of(s.Name, padded).LocalShape(s.Shape, t))).ToList();
            var ordered = ParamAndGradBuffer.InBufferOrder(held, h => h.Shape.Length).ToList();
            long count = ordered.Sum(h => h.Shape.Aggregate(1L, (a, d) => a * d));
            total += count * t;
            for (int r = 0; r < t; r++)
            {
                using var master = Checkpoint.ReadMaster(Path.Combine(dir, meta.Layout.RankFolder(r, p)), meta, count, dtype);
                long offset = 0;
                foreach (var (name, shape) in ordered)
                {
                    long n = shape.Aggregate(1L, (a, d) => a * d);
                    parts[name][r] ??= master.narrow(0, offset, n).view(shape).to(ScalarType.Float32).clone();
                    offset += n;
                }
            }
        }
        // The parameter count a run records is its ranks' buffers together, so a model read otherwise than it was built disagrees.
        if (total != meta.Parameters)
            throw new InvalidDataException($"The checkpoint in {dir} records {meta.Parameters} parameters and this model under {layout} holds {total}; it was saved by another model.");
        var weights = serial.Select(s => (s.Name, Weight: WeightSplit.Of(s.Name, padded).Join(parts[s.Name].Select(x => x!).ToList()))).ToList();
        scope.MoveToOuter(weights.Select(w => w.Weight));
        return weights;
    }

    /// <summary>Whether a model chunk holds the serial parameter <paramref name="name"/> (as <see cref="GptModel"/> builds its chunks).</summary>
    private static bool Holds(PipelineChunk chunk, string name, ModelSpec model)
    {
        string first = name.Split('.')[0];
        return first switch
        {
            "word_embeddings" => chunk.PreProcess || (chunk.PostProcess && model.TiedEmbeddings),
            "position_embeddings" => chunk.PreProcess,
            "layers" => int.Parse(name.Split('.')[1]) is var layer && layer >= chunk.FirstLayer && layer < chunk.FirstLayer + chunk.NumLayers,
            _ => chunk.PostProcess,
        };
    }
}
