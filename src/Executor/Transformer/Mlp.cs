using Harness.Executor.Fused;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// The MLP (Megatron-core transformer/mlp.py): linear_fc1 (column-parallel) → GeLU, or SwiGLU (Shazeer 2020:
/// silu(gate)·up, with gate and up as the two halves of fc1's output, stride 2) → linear_fc2 (row-parallel).
/// </summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> linear_fc1, linear_fc2;
    private readonly bool swiglu, fused;

    public Mlp(TransformerConfig config) : base(nameof(Mlp))
    {
        var m = config.Model;
        var tp = config.TensorParallel;
        swiglu = m.Activation == Activation.SwiGlu;
        fused = config.UseFusedKernels;
        long fc1 = swiglu ? 2L * m.FfnHiddenSize : m.FfnHiddenSize;
        linear_fc1 = tp.ColumnParallelLinear(m.HiddenSize, fc1, config.Bias, config.Init, stride: swiglu ? 2 : 1);
        linear_fc2 = tp.RowParallelLinear(m.FfnHiddenSize, m.HiddenSize, config.Bias, config.OutputInit);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = linear_fc1.forward(x);
        Tensor activated;
        if (swiglu) activated = fused && FusedKernels.Applies(h) ? SwiGluFunction.Apply(h) : ScriptedKernels.SwiGlu(h);
        else activated = nn.functional.gelu(h);
        return linear_fc2.forward(activated).MoveToOuterDisposeScope();
    }
}
