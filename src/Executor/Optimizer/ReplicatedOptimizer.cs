using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// An optimizer over the whole flat float32 buffer of a <see cref="ParamAndGradBuffer"/> (Megatron's optimizer without
/// --use-distributed-optimizer: every data-parallel rank keeps all of it): global-norm clipping and its
/// <see cref="IUpdateRule"/> on the flat master weights and states, so a step is a handful of kernels whatever the number of
/// parameters, and a checkpoint is a few flat tensors.
/// </summary>
public sealed class ReplicatedOptimizer : IOptimizerState, IDisposable
{
    private readonly ParamAndGradBuffer buffer;
    private readonly bool fused;
    public IUpdateRule Rule { get; }
    public IReadOnlyList<Tensor> States { get; }
    public long Step { get; set; }
    public IReadOnlyList<(long Offset, long Length)> Segments => [(0, buffer.Count)];
    public Tensor Master => buffer.Master;

    public ReplicatedOptimizer(ParamAndGradBuffer buffer, IUpdateRule rule)
    {
        (this.buffer, Rule) = (buffer, rule);
        fused = rule.Fuses(buffer.Master);
        States = rule.States.Select(_ => zeros_like(buffer.Master)).ToList();
    }

    /// <summary>
    /// Clips the accumulated gradients to the global norm limit and applies one update at the learning rate.
    /// Returns the gradient norm before clipping, as a device scalar (reading it is the caller's one sync).
    /// <paramref name="gradNorm"/> computes the norm when it spans several ranks (model parallelism).
    /// </summary>
    public Tensor ClipAndStep(double lr, Func<Tensor, Tensor>? gradNorm = null)
    {
        using var g = ParamAndGradBuffer.Float32Grads(buffer.MainGrads);
        return ClipAndStep(lr, g, gradNorm);
    }

    /// <summary>As above, on <paramref name="g"/>, the float32 main gradients (<see cref="ParamAndGradBuffer.Float32Grads"/>)
    /// the caller unscaled.</summary>
    public Tensor ClipAndStep(double lr, Tensor g, Func<Tensor, Tensor>? gradNorm = null)
    {
        Step++;
        using (no_grad())
        {
            var norm = gradNorm?.Invoke(g) ?? g.norm();
            // A fused update writes the 16-bit weights itself (none in fp32 training, whose master is the weights).
            Rule.ClipAndUpdate(buffer.Master, g, States, fused && buffer.MixedPrecision ? buffer.Params : null, buffer.DecayedCount, norm, lr, Step);
            if (!fused) buffer.CopyMasterToParams();
            return norm;
        }
    }

    public void CopyMasterToParams() => buffer.CopyMasterToParams();

    public void Dispose()
    {
        foreach (var s in States) s.Dispose();
    }
}
