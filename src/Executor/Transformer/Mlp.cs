using Harness.Executor.Fused;
using Harness.Executor.Offload;
using Harness.Executor.TensorParallel;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// The MLP (Megatron-core transformer/mlp.py): linear_fc1 (column-parallel) → GeLU (with biases and Megatron's
/// --bias-gelu-fusion, its fused tanh approximation, <see cref="BiasGelu"/>; else F.gelu, erf's), or SwiGLU (Shazeer 2020:
/// silu(gate)·up, with gate and up as the two halves of fc1's output, stride 2) → linear_fc2 (row-parallel).
/// Under Megatron-Kwai's --kaimm-recompute-mlp-activation-func the activation runs inside linear_fc2, which keeps fc1's
/// output rather than the activation's (backward recomputes it).
/// </summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly LinearLayer linear_fc1, linear_fc2;
    private readonly bool swiglu, fused, biasGelu, recomputeActivation;

    /// <param name="layer">The layer's number in the serial model, which names its weights (<see cref="WeightKey"/>).</param>
    public Mlp(TransformerConfig config, int layer) : base(nameof(Mlp))
    {
        var m = config.Model;
        var tp = config.TensorParallel;
        swiglu = m.Activation == Activation.SwiGlu;
        fused = config.UseFusedKernels && config.FusedSwiGlu;
        // Megatron turns bias_gelu_fusion off without biases (arguments.py: not add_bias_linear), so Llama-style GeLU runs F.gelu.
        biasGelu = !swiglu && config.FusedElementwise && config.Bias;
        long fc1 = swiglu ? 2L * m.FfnHiddenSize : m.FfnHiddenSize;
        linear_fc1 = tp.ColumnParallelLinear(m.HiddenSize, fc1, config.Bias, config.Init(new(WeightRole.LinearFc1, layer)), stride: swiglu ? 2 : 1);
        linear_fc2 = tp.RowParallelLinear(m.FfnHiddenSize, m.HiddenSize, config.Bias, config.OutputInit(new(WeightRole.LinearFc2, layer)));
        recomputeActivation = config.RecomputeOrNone.MlpActivation;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => forward(x, recomputedNorm: null);

    /// <param name="recomputedNorm">When given, x is the norm's input and the norm runs inside linear_fc1, which keeps x
    /// rather than the norm's output (Megatron-Kwai's --kaimm-recompute-norm: backward recomputes the norm).</param>
    public Tensor forward(Tensor x, Func<Tensor, Tensor>? recomputedNorm)
    {
        using var scope = NewDisposeScope();
        var h = linear_fc1.forward(x, recomputedNorm);
        var y = recomputeActivation ? linear_fc2.forward(SavedActivations.Save(h), Activate) : linear_fc2.forward(SavedActivations.Save(Activate(h)));
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>The activation of fc1's output: the fused SwiGLU kernel where it applies (bf16 on a GPU) and is asked for, else
    /// libtorch's operators, which keep SiLU's output as Megatron's unfused SwiGLU does. While activation offload records
    /// (<see cref="SavedActivations"/>), what the activation saves of fc1's output and SiLU's output is recorded: the operators
    /// run one by one then, the scripted chain keeping them out of reach.</summary>
    private Tensor Activate(Tensor h)
    {
        if (!swiglu) return biasGelu ? BiasGelu(SavedActivations.Save(h)) : nn.functional.gelu(SavedActivations.Save(h));
        if (fused && FusedKernels.Applies(h)) return SwiGluFunction.Apply(SavedActivations.Save(h));
        if (!SavedActivations.Recording) return ScriptedKernels.SwiGlu(h);
        var halves = h.chunk(2, -1);
        Tensor gate = SavedActivations.Save(halves[0]), up = SavedActivations.Save(halves[1]);
        return SavedActivations.Save(nn.functional.silu(gate)) * up;
    }

    /// <summary>
    /// Megatron's fused bias-GeLU (megatron/core/fusions/fused_bias_gelu.py at NVIDIA/Megatron-LM d98e8a6), which Megatron-core's
    /// MLP runs for GeLU with biases unless --no-bias-gelu-fusion: GeLU's tanh approximation x·0.5·(1 + tanh(0.79788456·x·(1 +
    /// 0.044715·x²))), keeping only its input, with the derivative of that approximation backward. fc1's GEMM has added the
    /// bias already. libtorch's gelu with approximate='tanh' is that function (its constant √(2/π) = 0.7978845608 agrees with
    /// Megatron's to 1e-9) in one kernel each way, computing in float32 and rounding once; F.gelu (erf's) is what
    /// --no-bias-gelu-fusion runs.
    /// </summary>
    public static Tensor BiasGelu(Tensor h) => nn.functional.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh);
}
