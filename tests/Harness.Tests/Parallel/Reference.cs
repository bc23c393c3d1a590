using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// The serial run parallel layouts must reproduce, and the comparison: a tiny float32 model trained a few steps
/// with AdamW (or another update rule) on fixed batches; losses per step and every gradient of the last step, by parameter name.
/// </summary>
internal static class Reference
{
    public const int Seed = 7;
    /// <summary>The seed of the dropout streams, serial and parallel alike (a run's default seed).</summary>
    public const int DropoutSeed = 1234;
    public const double Lr = 1e-3;
    /// <summary>A clipping limit the tiny model's gradients exceed, so the global norm over ranks is exercised.</summary>
    public static readonly AdamSettings Adam = new(ClipGrad: 0.5);

    /// <summary>L2 h32 a4 g4 ffn48 V64 s16: divisible by tp 4, by 2·cp for cp 2, and by tp for sequence parallel.</summary>
    public static ModelSpec Llama(int layers = 2) =>
        new("tiny-llama", layers, 32, 4, 4, 48, 64, 16, Activation.SwiGlu, Normalization.RmsNorm, PositionEmbedding.Rotary, false, HiddenDropout: 0, AttentionDropout: 0);

    public static ModelSpec Gpt(int layers = 2) =>
        new("tiny-gpt", layers, 32, 4, 4, 64, 64, 16, Activation.Gelu, Normalization.LayerNorm, PositionEmbedding.Learned, true, HiddenDropout: 0, AttentionDropout: 0);

    /// <summary>
    /// Token batches [b, s + 1] for each step (inputs are [.., :s], labels [.., 1:]): the same batch every step, so
    /// the loss must fall and a layout whose updates went wrong shows in the later steps' losses.
    /// </summary>
    public static Tensor[] Batches(ModelSpec spec, int steps, int batch)
    {
        TorchRuntime.Initialize();
        // A generator held until the call returns: a temporary one could be finalized while libtorch still draws from it.
        using var generator = new Generator(1234);
        var tokens = randint(0, spec.VocabSize, [batch, spec.SeqLength + 1], generator: generator);
        return Enumerable.Repeat(tokens, steps).ToArray();
    }

    /// <summary>Losses per step; the last step's (clipped) gradients and the final weights by serial name; the initial weights.</summary>
    public sealed record Run(float[] Losses, Dictionary<string, float[]> LastGrads, Dictionary<string, float[]> Final, Dictionary<string, float[]> Initial);

    /// <summary>
    /// The single-device run: gradients accumulated over micro-batches of <paramref name="microBatch"/> rows (each
    /// loss divided by their number), as the executor's trainer and Megatron do; the full batch when null.
    /// </summary>
    /// <param name="spec">With its hidden dropout (only) drawn from the streams a trainer seeds with <see cref="DropoutSeed"/>, step by step.</param>
    /// <param name="rule">The optimizer's update rule; null: AdamW with <see cref="Adam"/>.</param>
    /// <param name="fusedNorm">False: --no-norm-fusion's float32 norms.</param>
    /// <param name="fusedElementwise">False: F.gelu in place of Megatron's fused tanh bias-GeLU.</param>
    public static Run Serial(ModelSpec spec, Tensor[] batches, int? microBatch = null, IUpdateRule? rule = null, double lr = Lr, bool fusedNorm = true,
        bool fusedElementwise = true)
    {
        double hiddenDropout = spec.HiddenDropout;
        // Weights from the run's own generators (WeightInit): libtorch's global one is shared with every test running at the
        // same time, and a draw of theirs between seeding and initializing would start this run from other weights.
        using var dropout = hiddenDropout > 0 ? new DropoutRng(DropoutSeed, 0, 0, sequenceParallel: false, CPU) : null;
        using var model = new GptModel(new TransformerConfig(spec, CPU, ScalarType.Float32, SerialTensorParallel.Instance,
            InitSeed: Seed, HiddenDropout: hiddenDropout, Dropout: dropout, FusedNorm: fusedNorm, FusedElementwise: fusedElementwise));
        var initial = model.named_parameters().ToDictionary(n => n.name, n => n.parameter.data<float>().ToArray());
        using var buffer = new ParamAndGradBuffer(model, ScalarType.Float32);
        using var optimizer = new ReplicatedOptimizer(buffer, rule ?? new AdamW(Adam));
        var losses = new List<float>();
        Dictionary<string, float[]> grads = new();
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            dropout?.StartIteration(losses.Count);
            buffer.ZeroGrads();
            int s = spec.SeqLength, b = microBatch ?? (int)batch.shape[0], m = (int)batch.shape[0] / b;
            float loss = 0;
            // Held until the division returns (HeldScalars says why).
            using Scalar microBatches = m.ToScalar();
            for (int i = 0; i < m; i++)
            {
                var rows = batch.narrow(0, i * b, b);
                var part = model.forward(rows[.., ..s], rows[.., 1..]) / microBatches;
                part.backward();
                loss += part.item<float>();
            }
            losses.Add(loss);
            optimizer.ClipAndStep(lr);
            grads = model.named_parameters().ToDictionary(n => n.name, n => n.parameter.grad!.data<float>().ToArray());
        }
        var final = model.named_parameters().ToDictionary(n => n.name, n => n.parameter.data<float>().ToArray());
        return new Run([.. losses], grads, final, initial);
    }

    /// <summary>‖a − b‖ / ‖b‖ (b nonzero), the comparison of the 1e-5 relative bound.</summary>
    public static double RelativeError(float[] a, float[] b)
    {
        Assert.Equal(b.Length, a.Length);
        double diff = 0, norm = 0;
        for (int i = 0; i < a.Length; i++)
        {
            diff += (a[i] - (double)b[i]) * (a[i] - (double)b[i]);
            norm += (double)b[i] * b[i];
        }
        return norm == 0 ? Math.Sqrt(diff) : Math.Sqrt(diff / norm);
    }

    /// <summary>All tensors of a run as one vector (Adam turns float noise in near-zero gradients into updates of size lr, so single zero-initialized biases are compared only as part of the whole).</summary>
    public static float[] Concatenated(IEnumerable<float[]> parts) => parts.SelectMany(p => p).ToArray();

    public static void AssertClose(float[] actual, float[] expected, string what, double tolerance = 1e-5)
    {
        double e = RelativeError(actual, expected);
        Assert.True(e <= tolerance, $"{what}: relative error {e:E2} > {tolerance:E0}");
    }

    /// <summary>
    /// The part of a serial gradient that tensor-parallel rank r of t holds, by the parameter's role in the
    /// model: column-parallel rows (SwiGLU's fc1 with stride 2), row-parallel columns, vocabulary rows, or all of it.
    /// </summary>
    public static float[] ShardOf(string name, float[] serial, ModelSpec spec, int rank, int size)
    {
        var shape = ShapeOf(name, spec);
        using var scope = NewDisposeScope();
        var full = tensor(serial).reshape(shape);
        Tensor part = name switch
        {
            _ when name.EndsWith("linear_fc1.weight") || name.EndsWith("linear_fc1.bias") =>
                Shards.Rows(full, rank, size, spec.Activation == Activation.SwiGlu ? 2 : 1),
            _ when name.EndsWith("linear_qkv.weight") || name.EndsWith("linear_qkv.bias") || name is "word_embeddings" or "output_layer" =>
                Shards.Rows(full, rank, size),
            _ when name.EndsWith("linear_proj.weight") || name.EndsWith("linear_fc2.weight") => Shards.Columns(full, rank, size),
            _ => full,
        };
        return part.contiguous().data<float>().ToArray();
    }

    private static long[] ShapeOf(string name, ModelSpec spec)
    {
        long h = spec.HiddenSize, f = spec.FfnHiddenSize, fc1 = spec.Activation == Activation.SwiGlu ? 2 * f : f;
        return name switch
        {
            "word_embeddings" or "output_layer" => [spec.VocabSize, h],
            "position_embeddings" => [spec.SeqLength, h],
            _ when name.EndsWith("linear_qkv.weight") => [spec.QkvWidth, h],
            _ when name.EndsWith("linear_qkv.bias") => [spec.QkvWidth],
            _ when name.EndsWith("linear_proj.weight") => [h, h],
            _ when name.EndsWith("linear_fc1.weight") => [fc1, h],
            _ when name.EndsWith("linear_fc1.bias") => [fc1],
            _ when name.EndsWith("linear_fc2.weight") => [h, f],
            _ => [-1],
        };
    }
}
