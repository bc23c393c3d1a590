using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// Bytes per parameter the optimizer keeps, by its update rule. Adam: master weights and two moments (<see cref="AdamStates"/>:
/// 12 B in fp32). SGD as Megatron builds it (megatron/core/optimizer/__init__.py: torch.optim.SGD, or Transformer Engine's
/// FusedSGD, with --sgd-momentum): the fp32 master weights of mixed precision (4 B; none in fp32 training, where the weights are
/// their own master) and one fp32 momentum buffer (4 B), which torch.optim.SGD does not allocate with momentum 0
/// (torch/optim/sgd.py keeps momentum_buffer only when momentum != 0): 8 B, or 4 B without momentum.
/// </summary>
public static class OptimizerStates
{
    public static double BytesPerParameter(RunDescription c) => c.Optimizer switch
    {
        OptimizerType.Sgd => (c.Precision == Precision.Fp32 ? 0 : 4) + (c.SgdMomentum != 0 ? 4 : 0),
        _ => c.AdamOrDefault.BytesPerParameter(c.Precision),
    };
}
