using TorchSharp;
using Harness.Simulator.Specs;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Optimizer;

/// <summary>
/// Megatron's --optimizer sgd: torch.optim.SGD(lr, weight_decay, momentum=--sgd-momentum) (megatron/core/optimizer/__init__.py
/// at NVIDIA/Megatron-LM d98e8a6), no dampening, no Nesterov. Weight decay is L2, added to the gradient before the momentum
/// (torch/optim/sgd.py: d = g + wd·w), not decoupled as AdamW's; b = μ·b + d; w -= lr·b. torch starts the buffer as a
/// copy of the first step's d; a buffer of zeros gives μ·0 + d = d exactly, so none is special-cased. With momentum 0 torch keeps
/// no buffer and steps w -= lr·d. Always libtorch's operators: there is no fused SGD kernel here.
/// </summary>
public sealed class Sgd(AdamSettings options, double momentum) : IUpdateRule
{
    public IReadOnlyList<string> States { get; } = momentum != 0 ? ["momentum_buffer"] : [];

    public string Flags => FormattableString.Invariant($"--optimizer sgd --sgd-momentum {momentum}");

    public bool Fuses(Tensor master) => false;

    public void ClipAndUpdate(Tensor w, Tensor g, IReadOnlyList<Tensor> states, Tensor? param, long decayedCount, Tensor norm, double lr, long step)
    {
        GradientClip.Clip(g, norm, options.ClipGrad);
        Update(w, g, states.Count > 0 ? states[0] : null, decayedCount, options.WeightDecay, momentum, lr);
    }

    /// <summary>One SGD update of flat weights <paramref name="w"/> with gradients <paramref name="g"/> (left as they are) and
    /// momentum buffer <paramref name="buffer"/> (null: momentum 0); weight decay on the first <paramref name="decayedCount"/>
    /// elements, in torch's order of operations.</summary>
    public static void Update(Tensor w, Tensor g, Tensor? buffer, long decayedCount, double weightDecay, double momentum, double lr)
    {
        bool decays = weightDecay > 0 && decayedCount > 0;
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar decay = weightDecay.ToScalar(), step = (-lr).ToScalar(), beta = momentum.ToScalar();
        using var decayed = decays ? g.clone() : null;
        if (decayed is not null)
        {
            using var target = decayed.narrow(0, 0, decayedCount);
            using var source = w.narrow(0, 0, decayedCount);
            target.add_(source, alpha: decay);
        }
        var d = decayed ?? g;
        if (buffer is null)
        {
            w.add_(d, alpha: step);
            return;
        }
        buffer.mul_(beta).add_(d, One);
        w.add_(buffer, alpha: step);
    }
}
