using Harness.Simulator.Specs;

namespace Harness.Tests.Parallel;

/// <summary>
/// --optimizer sgd on CPU ranks: the serial SGD run's losses, gradients and final weights within 1e-5 over three steps,
/// replicated and with the distributed optimizer's shards of the momentum buffer (ZeRO 1 to 3), under data and tensor
/// parallelism, with and without momentum. The rate is SGD's scale, not Adam's: three steps move the weights by about 1% of
/// their norm, so a wrong update shows three orders above the bound.
/// </summary>
public class SgdParallelTests
{
    private const double Lr = 0.1;

    private static RunDescription Config(int zero, int dp, int tp, double momentum = 0.9) =>
        new(DataParallel: dp, TensorParallel: tp, SequenceParallel: tp > 1, MicroBatch: 1, GlobalBatch: 2 * dp, ZeroStage: zero, Precision: Precision.Fp32,
            DdpBucketSize: 3000, Optimizer: OptimizerType.Sgd, SgdMomentum: momentum);

    [Theory]
    [InlineData(1, 2, 1)]
    [InlineData(0, 1, 2)]
    [InlineData(1, 2, 2)]
    [InlineData(2, 2, 2)]
    [InlineData(3, 2, 1)]
    public void MatchesTheSerialSgdRun(int zero, int dp, int tp) =>
        // GPT: biases and norms (not decayed), learned positions, a tied output layer.
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(zero, dp, tp), lr: Lr);

    [Fact]
    public void WithoutMomentumMatchesTheSerialRun() =>
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(1, dp: 2, tp: 1, momentum: 0), lr: Lr);
}
