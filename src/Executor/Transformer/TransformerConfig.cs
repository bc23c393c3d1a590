using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// What the blocks need besides the <see cref="ModelSpec"/>: where and in what precision they live, the
/// tensor-parallel seam, and the recomputation (Megatron's granularity, method and number of layers). Parameters live in <see cref="ComputeDtype"/> (bf16 for mixed
/// precision; float64 for gradient checks); weights are drawn in float32 and cast, and the optimizer's float32
/// master weights start as copies of the bf16 parameters, as in Megatron's Float16OptimizerWithFloat16Params.
/// With <see cref="InitSeed"/> every weight is drawn on the CPU from a generator of its own (<see cref="WeightInit"/>: the
/// same weights in every layout and on every device, and concurrent runs in one process do not share libtorch's global
/// generator); without, from the global generator on the device. <see cref="UseFusedKernels"/> lets the blocks run the executor's own CUDA kernels
/// (src/Executor/Fused) where they apply; the caller turns it on only once they compiled for the device, and
/// <see cref="UseFusedGptKernels"/> the GPT path's (Fused.GptKernels: residual add + LayerNorm, embedding + positions), a module
/// of their own, likewise. <see cref="FusedSwiGlu"/>
/// (Megatron's --bias-swiglu-fusion) lets the MLP use the fused SwiGLU kernel among them. <see cref="FusedNorm"/> false
/// (--no-norm-fusion) runs the norms as float32 operators (<see cref="Norms"/>); <see cref="FusedElementwise"/> false
/// (--no-bias-gelu-fusion with the other two) runs GeLU as F.gelu, not Megatron's fused tanh bias-GeLU (<see cref="Mlp"/>).
/// <see cref="HiddenDropout"/> (after the attention and MLP outputs, and on the embeddings) draws its masks from
/// <see cref="Dropout"/>'s streams, and so does <see cref="AttentionDropout"/> (on the attention probabilities, inside the
/// flash kernel on a GPU).
/// </summary>
public sealed record TransformerConfig(
    ModelSpec Model,
    Device Device,
    ScalarType ComputeDtype,
    ITensorParallel TensorParallel,
    RecomputeSpec? Recompute = null,
    double InitStd = 0.02,
    long? InitSeed = null,
    IContextParallel? ContextParallel = null,
    bool UseFusedKernels = false,
    bool UseFusedGptKernels = false,
    bool FusedSwiGlu = true,
    double HiddenDropout = 0,
    double AttentionDropout = 0,
    DropoutRng? Dropout = null,
    bool FusedNorm = true,
    bool FusedElementwise = true)
{
    public RecomputeSpec RecomputeOrNone => Recompute ?? RecomputeSpec.None;

    /// <summary>Float32 master weights under bf16/fp16 compute; otherwise the compute type itself.</summary>
    public ScalarType MasterDtype => ParamAndGradBuffer.MasterDtypeOf(ComputeDtype);

    /// <summary>Megatron's init_method_normal for the weight <paramref name="key"/> names: N(0, σ²) with σ = 0.02.</summary>
    public InitMethod Init(WeightKey key) => shape => Normal(key, InitStd, shape);

    /// <summary>Megatron's scaled_init_method_normal for the layers that write into the residual stream: σ/√(2L).</summary>
    public InitMethod OutputInit(WeightKey key) => shape => Normal(key, InitStd / Math.Sqrt(2.0 * Model.NumLayers), shape);

    private Tensor Normal(WeightKey key, double std, long[] shape)
    {
        // The draws and casts are held by this scope until libtorch has returned from the call that reads them: models are
        // built outside any scope, where a dropped intermediate is freed by the finalizer, possibly mid-call.
        using var scope = NewDisposeScope();
        using Scalar scale = std.ToScalar();   // held until the call returns (HeldScalars says why)
        var w = InitSeed is { } seed
            ? WeightInit.Normal(seed, key, std, shape, MasterDtype).to(Device)
            // torch.normal(0, std) as TorchSharp computes it, randn · std (its + 0 changes no value), with the Scalar held.
            : randn(shape, dtype: MasterDtype, device: Device).mul_(scale);
        return (w.dtype == ComputeDtype ? w : w.to(ComputeDtype)).MoveToOuterDisposeScope();
    }

    /// <summary>GPT's linears carry biases (Megatron's add_bias_linear); Llama's do not.</summary>
    public bool Bias => Model.Normalization == Normalization.LayerNorm;
}

