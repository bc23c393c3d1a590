using Harness.Executor.Transformer;
using Harness.Simulator.Specs;

namespace Harness.Tests.Parallel;

/// <summary>Pipeline, data-parallel and combined layouts reproduce the serial run's losses, gradients and weights.</summary>
public class LayoutTests
{
    private static RunDescription Config(int dp = 1, int tp = 1, int pp = 1, int? layersPerVirtualStage = null, int micro = 1, int microBatches = 4, int zero = 0, int cp = 1) =>
        new(DataParallel: dp, TensorParallel: tp, PipelineParallel: pp, LayersPerVirtualStage: layersPerVirtualStage, ContextParallel: cp,
            MicroBatch: micro, GlobalBatch: micro * microBatches * dp, ZeroStage: zero, Precision: Precision.Fp32,
            ContextParallelComm: ContextParallelCommType.AllGather);

    private static readonly ContextParallelCommType Ring = ContextParallelCommType.P2p;

    [Fact]
    public void Dp2MatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(dp: 2, microBatches: 2));

    [Fact]
    public void Dp2DistributedOptimizerMatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(dp: 2, microBatches: 2, zero: 1));

    [Fact]
    public void Pp2OneFOneBMatchesSerial()
    {
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(pp: 2));
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(pp: 2)); // tied embedding on both ends
    }

    [Fact]
    public void Pp4OneFOneBMatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Gpt(layers: 4), Config(pp: 4));

    /// <summary>Uneven stages (Megatron's --decoder-first/last-pipeline-num-layers): 6 layers on 4 ranks as 1, 2, 2, 1, on 3 as
    /// 1, 4, 1 (the middle rank alone takes the rest), and a first stage alone with its own count on 2 ranks (1, 5).</summary>
    [Fact]
    public void UnevenStagesMatchSerial()
    {
        ParallelRun.AssertMatchesSerial(Reference.Gpt(layers: 6), Config(pp: 4) with { LayersInFirstPipelineStage = 1, LayersInLastPipelineStage = 1 });
        ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 6), Config(pp: 3) with { LayersInFirstPipelineStage = 1, LayersInLastPipelineStage = 1 });
        ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 6), Config(pp: 2) with { LayersInFirstPipelineStage = 1 });
    }

    /// <summary>The embedding and loss counted as layers (--account-for-*-in-pipeline-split): 6 layers on 2 ranks of 2 chunks
    /// as [0] [3, 4] and [1, 2] [5]; 2 layers on 2 ranks of 2 chunks leave the first chunk the embedding alone and the last
    /// the loss alone; without interleaving, 6 layers on 4 ranks as 1, 2, 2, 1.</summary>
    [Fact]
    public void EmbeddingAndLossCountedAsLayersMatchSerial()
    {
        var both = Config(pp: 2, layersPerVirtualStage: 2) with { AccountForEmbeddingInPipelineSplit = true, AccountForLossInPipelineSplit = true };
        ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 6), both);
        ParallelRun.AssertMatchesSerial(Reference.Gpt(layers: 2), both with { LayersPerVirtualStage = 1 });
        ParallelRun.AssertMatchesSerial(Reference.Gpt(layers: 6), Config(pp: 4) with { AccountForEmbeddingInPipelineSplit = true, AccountForLossInPipelineSplit = true });
        ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 5), Config(pp: 2) with { AccountForLossInPipelineSplit = true });
    }

    [Fact]
    public void Pp2InterleavedMatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Gpt(layers: 4), Config(pp: 2, layersPerVirtualStage: 1));

    [Fact]
    public void Pp4InterleavedMatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Llama(layers: 8), Config(pp: 4, layersPerVirtualStage: 1));

    [Fact]
    public void Tp2Pp2Dp2MatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(dp: 2, tp: 2, pp: 2, microBatches: 2));

    [Fact]
    public void RecomputeMatchesSerialUnderTensorAndPipelineParallelism()
    {
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(tp: 2, pp: 2, microBatches: 2) with { Recompute = RecomputeSpec.FullUniform() });
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(tp: 2, dp: 2, microBatches: 2) with { SequenceParallel = true, Recompute = RecomputeSpec.Selective });
    }

    [Fact]
    public void Cp2MatchesSerial()
    {
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(cp: 2, microBatches: 2)); // rotary at global positions
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(cp: 2, microBatches: 2));   // learned positions
    }

    [Fact]
    public void Cp2WithTensorPipelineAndDataParallelismMatchesSerial()
    {
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(cp: 2, tp: 2, microBatches: 2) with { SequenceParallel = true });
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(cp: 2, pp: 2, dp: 2, microBatches: 2, zero: 1));
    }

    [Fact]
    public void RingAttentionMatchesSerial()
    {
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Config(cp: 2, microBatches: 2) with { ContextParallelComm = Ring });
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Config(cp: 4, microBatches: 1) with { Recompute = RecomputeSpec.Selective, ContextParallelComm = Ring });
    }
}
