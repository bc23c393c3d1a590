using Harness.Executor.Optimizer;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// A linear layer the tensor-parallel seam makes (<see cref="DenseLinear"/>, <see cref="ParallelLinear"/>): y = x·Wᵀ (+ b) as a
/// module, and the same linear of a recomputed input, for Megatron-Kwai's rematerialization (<see cref="RecomputedInputLinear"/>).
/// </summary>
public abstract class LinearLayer : nn.Module<Tensor, Tensor>, IMainGradWeight
{
    protected LinearLayer(string name) : base(name) { }

    public abstract Parameter Weight { get; }

    public abstract void AccumulateInto(Tensor mainGradient);

    /// <summary>This linear of input(source), the same numbers as forward(input(source)), keeping source for backward
    /// in place of input(source), which backward computes again; forward(source) when <paramref name="input"/> is null.
    /// The input runs before the layer's own input mapping (the column-parallel f or sequence-parallel all-gather), which
    /// backward then repeats too.</summary>
    public Tensor forward(Tensor source, Func<Tensor, Tensor>? input) => input is null ? forward(source) : OfRecomputed(source, input);

    protected abstract Tensor OfRecomputed(Tensor source, Func<Tensor, Tensor> input);
}
