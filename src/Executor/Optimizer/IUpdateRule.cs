using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// The arithmetic of one optimizer step over flat float32 master weights and the per-element states the rule keeps beside
/// them (Megatron's --optimizer: <see cref="AdamW"/>'s two moments, <see cref="Sgd"/>'s momentum buffer). Elementwise, so
/// the optimizers that hold the states, <see cref="ReplicatedOptimizer"/> over the whole buffer and the distributed
/// optimizer over this rank's shards of it, run the same rule on whatever piece they own.
/// </summary>
public interface IUpdateRule
{
    /// <summary>The per-element float32 states, by the names torch's optimizers give them (and a checkpoint's files).</summary>
    IReadOnlyList<string> States { get; }

    /// <summary>The flags that choose this rule, as a sentence names it (--optimizer sgd --sgd-momentum 0.9).</summary>
    string Flags { get; }

    /// <summary>Whether updating <paramref name="master"/> runs one fused kernel, which also writes the model's 16-bit weights.</summary>
    bool Fuses(Tensor master);

    /// <summary>
    /// Clips the gradients <paramref name="g"/> to the global norm limit (<paramref name="norm"/> spans every rank's part),
    /// then updates weights <paramref name="w"/> and <paramref name="states"/> (in <see cref="States"/>' order) at rate
    /// <paramref name="lr"/>, step counted from 1; weight decay on the first <paramref name="decayedCount"/> elements. Where
    /// <see cref="Fuses"/>, <paramref name="param"/> receives the 16-bit weights (null: none to write).
    /// </summary>
    void ClipAndUpdate(Tensor w, Tensor g, IReadOnlyList<Tensor> states, Tensor? param, long decayedCount, Tensor norm, double lr, long step);

    /// <summary>The rule <paramref name="d"/>'s --optimizer names, with Megatron's optimizer flags <paramref name="o"/>
    /// (--weight-decay and --clip-grad apply to both); <paramref name="fused"/>: Adam's fused kernel where it runs.</summary>
    static IUpdateRule For(RunDescription d, AdamSettings o, bool fused) => d.Optimizer switch
    {
        OptimizerType.Sgd => new Sgd(o, d.SgdMomentum),
        _ => new AdamW(o, fused),
    };
}
