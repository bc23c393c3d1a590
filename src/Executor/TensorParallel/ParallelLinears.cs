using Harness.Executor.Fused;
using Harness.Executor.Optimizer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// Megatron's parallel linears (tensor_parallel/layers.py), y = outputMap(inputMap(x)·Wᵀ) + b, holding this
/// rank's shard of W and a zero-initialized bias when asked:
/// - <see cref="Column"/> (ColumnParallelLinear): W's rows (output features) and the bias split over the group;
///   inputMap is f (all-reduce in backward), the sequence-parallel all-gather, or nothing under CAAT-Net's
///   partial sync; no outputMap, so the GEMM adds the bias shard (addmm's epilogue: no pass of its own over the output).
/// - <see cref="Row"/> (RowParallelLinear): W's columns (input features) split; each rank's partial product
///   goes through outputMap (g's all-reduce, the sequence-parallel reduce-scatter, or CAAT-Net's partial
///   all-reduce) and the replicated bias is added after it, once.
/// Once the gradient buffer hands it a float32 main gradient (<see cref="IMainGradWeight"/>, gradient-accumulation
/// fusion), the shard's gradient is added there by <see cref="LinearWithGradAccumulation"/>, which saves the GEMM's
/// input as libtorch's linear does: after inputMap, so under sequence parallelism the all-gathered sequence, which the
/// weight gradient needs (Megatron instead saves the local block and gathers it again in backward, to save memory).
/// Of a recomputed input (<see cref="LinearLayer.forward(Tensor, Func{Tensor, Tensor})"/>) it keeps what the input is computed
/// from, before inputMap: under sequence parallelism the local block, gathered again in backward, as in Megatron.
/// </summary>
public sealed class ParallelLinear : LinearLayer
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private readonly Func<Tensor, Tensor> inputMap;
    private readonly Func<Tensor, Tensor>? outputMap;
    private Tensor? mainGrad;

    public override Parameter Weight => weight;

    public override void AccumulateInto(Tensor mainGradient) => mainGrad = mainGradient;

    /// <param name="outputMap">The row-parallel reduction, after which the bias is added; null for a column-parallel linear,
    /// whose GEMM adds its bias shard.</param>
    private ParallelLinear(Tensor weightShard, bool bias, Func<Tensor, Tensor> inputMap, Func<Tensor, Tensor>? outputMap) : base(nameof(ParallelLinear))
    {
        weight = new Parameter(weightShard);
        if (bias) this.bias = new Parameter(zeros(weight.shape[0], dtype: weight.dtype, device: weight.device));
        (this.inputMap, this.outputMap) = (inputMap, outputMap);
        RegisterComponents();
    }

    public static ParallelLinear Column(Tensor weightShard, bool bias, Func<Tensor, Tensor> inputMap) => new(weightShard, bias, inputMap, null);

    public static ParallelLinear Row(Tensor weightShard, bool bias, Func<Tensor, Tensor> outputMap) => new(weightShard, bias, x => x, outputMap);

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        return Reduced(LinearWithGradAccumulation.Of(inputMap(input), weight, mainGrad, GemmBias)).MoveToOuterDisposeScope();
    }

    protected override Tensor OfRecomputed(Tensor source, Func<Tensor, Tensor> input)
    {
        using var scope = NewDisposeScope();
        return Reduced(RecomputedInputLinear.Apply(x => inputMap(input(x)), source, weight, GemmBias, mainGrad)).MoveToOuterDisposeScope();
    }

    /// <summary>The bias the GEMM adds: a column-parallel linear's shard; a row-parallel one adds its bias after the reduction.</summary>
    private Tensor? GemmBias => outputMap is null ? bias : null;

    /// <summary>A row-parallel GEMM's output through the reduction, then its bias; a column-parallel one's as it is.</summary>
    private Tensor Reduced(Tensor y)
    {
        if (outputMap is null) return y;
        y = outputMap(y);
        return bias is null ? y : y.Plus(bias);
    }
}

/// <summary>Slices of full weights: what rank r of t keeps.</summary>
public static class Shards
{
    /// <summary>
    /// Rows of a [out, in] weight for a column-parallel rank; with Megatron's <paramref name="stride"/> the
    /// rows form that many equal parts (SwiGLU's gate and up) and the rank keeps its slice of each, in order.
    /// </summary>
    public static Tensor Rows(Tensor full, int rank, int size, int stride = 1)
    {
        using var scope = NewDisposeScope();
        var parts = full.chunk(stride, 0).Select(part => part.chunk(size, 0)[rank]).ToArray();
        return (parts.Length == 1 ? parts[0] : cat(parts, 0)).contiguous().clone().MoveToOuterDisposeScope();
    }

    /// <summary>Columns (input features) of a [out, in] weight for a row-parallel rank.</summary>
    public static Tensor Columns(Tensor full, int rank, int size)
    {
        using var scope = NewDisposeScope();
        return full.chunk(size, 1)[rank].contiguous().clone().MoveToOuterDisposeScope();
    }
}
