using Harness.Executor.Fused;
using Harness.Executor.Optimizer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>The tensor-parallel seam for one rank: plain linears, embedding lookup and cross-entropy.</summary>
public sealed class SerialTensorParallel : ITensorParallel
{
    public static SerialTensorParallel Instance { get; } = new();

    public int WorldSize => 1;

    public LinearLayer ColumnParallelLinear(long inFeatures, long outFeatures, bool bias, InitMethod init, int stride = 1) =>
        new DenseLinear(init(new[] { outFeatures, inFeatures }), bias);

    public LinearLayer RowParallelLinear(long inFeatures, long outFeatures, bool bias, InitMethod init) =>
        new DenseLinear(init(new[] { outFeatures, inFeatures }), bias);

    public Parameter VocabParallelWeight(long vocabSize, long hiddenSize, InitMethod init) =>
        new(init(new[] { vocabSize, hiddenSize }));

    public Tensor EmbeddingLookup(Tensor tokens, Tensor weight) => EmbeddingFunction.Rows(weight, tokens);

    public Tensor FusedEmbeddingLookup(Tensor tokens, Tensor weight, Tensor position, Tensor positionIds) =>
        EmbeddingFunction.Apply(tokens, weight, 0, position, positionIds);

    public Tensor EnterDecoder(Tensor embeddings) => embeddings;

    public Tensor Logits(Tensor hidden, Tensor weight) => nn.functional.linear(hidden, weight);

    public Tensor CrossEntropy(Tensor logits, Tensor labels) =>
        nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float32), labels.reshape(-1), reduction: nn.Reduction.None);
}

/// <summary>
/// y = x·Wᵀ + b with the given weight (and a zero bias when asked), as Megatron's linears initialize biases. Once the
/// gradient buffer hands it a float32 main gradient (<see cref="IMainGradWeight"/>), backward adds the weight gradient
/// there directly (<see cref="LinearWithGradAccumulation"/>).
/// </summary>
public sealed class DenseLinear : LinearLayer
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private Tensor? mainGrad;

    public override Parameter Weight => weight;

    public override void AccumulateInto(Tensor mainGradient) => mainGrad = mainGradient;

    public DenseLinear(Tensor weight, bool bias) : base(nameof(DenseLinear))
    {
        if (bias) this.bias = new Parameter(zeros(weight.shape[0], dtype: weight.dtype, device: weight.device));
        this.weight = new Parameter(weight); // takes over the tensor's handle
        RegisterComponents();
    }

    /// <summary>x·Wᵀ + b, the bias added by the GEMM with or without a main gradient (no pass of its own over the output).</summary>
    public override Tensor forward(Tensor input) => LinearWithGradAccumulation.Of(input, weight, mainGrad, bias);

    /// <summary>As <see cref="forward(Tensor)"/>. In a scope of its own: TorchSharp's custom functions keep an empty tensor of
    /// each output's shape (for gradients that never come) in the current scope, freed here rather than at the end of the
    /// caller's block.</summary>
    protected override Tensor OfRecomputed(Tensor source, Func<Tensor, Tensor> input)
    {
        using var scope = NewDisposeScope();
        return RecomputedInputLinear.Apply(input, source, weight, bias, mainGrad).MoveToOuterDisposeScope();
    }
}
