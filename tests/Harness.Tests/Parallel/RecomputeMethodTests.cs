using Harness.Simulator.Specs;

namespace Harness.Tests.Parallel;

/// <summary>
/// Megatron's --recompute-method uniform and block with --recompute-num-layers, in parallel layouts: recomputation changes
/// what is kept, not what is computed, so the losses are those without it to the bit and the gradients and weights agree
/// within 1e-6 (relative), on every rank; the layouts still match the serial run (<see cref="ParallelRun.AssertRecomputedAsWithout"/>).
/// </summary>
public class RecomputeMethodTests
{
    private static void AssertRecomputedAsWithout(ModelSpec spec, RunDescription config, RecomputeSpec recompute) =>
        ParallelRun.AssertRecomputedAsWithout(spec, config, recompute, 1e-6);

    /// <summary>For four layers per model chunk: groups of 2 or all 4, and the first 1 or 3 recomputed.</summary>
    public static TheoryData<RecomputeMethod, int> Methods => new() { { RecomputeMethod.Uniform, 2 }, { RecomputeMethod.Uniform, 4 }, { RecomputeMethod.Block, 1 }, { RecomputeMethod.Block, 3 } };

    [Theory]
    [MemberData(nameof(Methods))]
    public void SerialRankMatches(RecomputeMethod method, int layers) =>
        AssertRecomputedAsWithout(Reference.Llama(layers: 4), new RunDescription(MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32),
            new RecomputeSpec(RecomputeGranularity.Full, method, layers));

    [Theory]
    [InlineData(RecomputeMethod.Uniform, 1)]
    [InlineData(RecomputeMethod.Uniform, 2)]
    [InlineData(RecomputeMethod.Block, 1)]
    [InlineData(RecomputeMethod.Block, 2)]
    public void Tp2Pp2Matches(RecomputeMethod method, int layers) =>
        // Two layers per pipeline stage (deeper models drift from the serial run by float rounding alone, beyond 1e-5).
        AssertRecomputedAsWithout(Reference.Llama(layers: 4), new RunDescription(TensorParallel: 2, PipelineParallel: 2, MicroBatch: 1, GlobalBatch: 4, Precision: Precision.Fp32),
            new RecomputeSpec(RecomputeGranularity.Full, method, layers));

    [Theory]
    [InlineData(RecomputeMethod.Uniform, 2)]
    [InlineData(RecomputeMethod.Block, 1)]
    public void InterleavedWithOverlappedGradientReduceAndParamGatherMatches(RecomputeMethod method, int layers) =>
        // Two model chunks of two layers per pipeline rank; buckets launched from markers at a recomputed group's input, the
        // forward waiting there for the group's gathered weights.
        AssertRecomputedAsWithout(Reference.Llama(layers: 8), new RunDescription(DataParallel: 2, PipelineParallel: 2, LayersPerVirtualStage: 2, MicroBatch: 1,
                GlobalBatch: 8, ZeroStage: 1, Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: true, ParamGather: true), DdpBucketSize: 3000),
            new RecomputeSpec(RecomputeGranularity.Full, method, layers));
}
