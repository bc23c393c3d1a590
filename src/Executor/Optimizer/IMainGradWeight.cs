using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// A layer whose weight gradient can go straight into the weight's float32 main gradient (Megatron's param.main_grad
/// with gradient-accumulation fusion) instead of autograd's .grad. <see cref="ParamAndGradBuffer"/> finds such layers
/// and hands each its slice of the main gradients.
/// </summary>
public interface IMainGradWeight
{
    Parameter Weight { get; }

    /// <summary>From now on, backward adds the weight's gradient into <paramref name="mainGradient"/> (float32, the
    /// weight's shape) and leaves .grad alone.</summary>
    void AccumulateInto(Tensor mainGradient);
}
