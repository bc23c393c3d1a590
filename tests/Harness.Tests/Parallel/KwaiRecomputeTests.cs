using Harness.Simulator.Specs;

namespace Harness.Tests.Parallel;

/// <summary>
/// Megatron-Kwai's norm and SwiGLU-output recomputation (--kaimm-recompute-norm, --kaimm-recompute-mlp-activation-func), alone,
/// together and beside selective recomputation, in the layouts the executor runs: it changes what is kept, not what is
/// computed, so the losses are those without it to the bit on every rank. The SwiGLU recompute keeps the gradients and
/// weights to the bit too. With the norm recompute they agree within 1e-6 (relative): libtorch's RMSNorm on the CPU is
/// composite (x·rsqrt(mean(x²) + eps)·w), so the norm's input gets two gradients of its own, which the recomputation sums
/// before the residual stream's is added, where autograd adds the three in arrival order (float32 rounding).
/// </summary>
public class KwaiRecomputeTests
{
    private static void AssertRecomputedAsWithout(RunDescription config, RecomputeSpec recompute, int layers = 2) =>
        ParallelRun.AssertRecomputedAsWithout(Reference.Llama(layers), config, recompute, recompute.NormOutputs ? 1e-6 : 0);

    public static TheoryData<string> Modes => ["norm", "activation", "kwai", "selective+kwai"];

    private static RecomputeSpec Mode(string name) => name switch
    {
        "norm" => new(NormOutputs: true),
        "activation" => new(MlpActivation: true),
        "kwai" => RecomputeSpec.Kwai,
        "selective+activation" => RecomputeSpec.Selective with { MlpActivation = true },
        "selective+kwai" => RecomputeSpec.Selective with { NormOutputs = true, MlpActivation = true },
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Modes))]
    public void SerialRankMatches(string mode) =>
        AssertRecomputedAsWithout(new RunDescription(MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32), Mode(mode));

    [Theory]
    [MemberData(nameof(Modes))]
    public void Tp2SequenceParallelMatches(string mode) =>
        // The norm runs on each rank's sequence block; the recomputation all-gathers its output again in backward.
        AssertRecomputedAsWithout(new RunDescription(TensorParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32), Mode(mode));

    [Theory]
    [InlineData("activation")]
    [InlineData("selective+activation")]
    public void Tp2WithoutSequenceParallelMatches(string mode) =>
        // The norm recompute needs sequence parallelism under t > 1 (RunDescription.Validate); the SwiGLU one does not.
        AssertRecomputedAsWithout(new RunDescription(TensorParallel: 2, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32), Mode(mode));

    [Fact]
    public void Tp2SequenceParallelPp2OneFOneBMatches() =>
        AssertRecomputedAsWithout(new RunDescription(TensorParallel: 2, PipelineParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4,
            Precision: Precision.Fp32), RecomputeSpec.Kwai, layers: 4);

    [Theory]
    [InlineData("kwai")]
    [InlineData("selective+kwai")]
    public void Pp2InterleavedWithTheDistributedOptimizerMatches(string mode) =>
        // Two model chunks of two layers per pipeline rank, two data-parallel ranks sharing the optimizer states.
        AssertRecomputedAsWithout(new RunDescription(DataParallel: 2, PipelineParallel: 2, LayersPerVirtualStage: 2, MicroBatch: 1, GlobalBatch: 8,
            ZeroStage: 1, Precision: Precision.Fp32), Mode(mode), layers: 8);

    [Theory]
    [InlineData("kwai", ContextParallelCommType.P2p)]
    [InlineData("selective+kwai", ContextParallelCommType.P2p)]
    [InlineData("selective+kwai", ContextParallelCommType.AllGather)]
    public void Cp2Matches(string mode, ContextParallelCommType comm) =>
        AssertRecomputedAsWithout(new RunDescription(ContextParallel: 2, MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32, ContextParallelComm: comm), Mode(mode));
}
