using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>Every reason RunDescription.Validate and ModelSpec.Validate give, each triggered on its own.</summary>
public class ValidationTests
{
    // Llama-7B (L32 h4096 a32 ffn11008) on 8 GPUs, t 2, p 2, dp 2: valid as is.
    private static readonly ModelSpec Llama = ModelPresets.All["llama-7b"];
    private static readonly RunDescription Valid = new(DataParallel: 2, TensorParallel: 2, PipelineParallel: 2,
        SequenceParallel: true, MicroBatch: 1, GlobalBatch: 16);

    public static TheoryData<string, RunDescription, ModelSpec, string> Cases()
    {
        var gpt = ModelPresets.All["gpt-1.7b"];
        return new()
        {
            { "positive sizes", Valid with { MicroBatch = 0 }, Llama, "--micro-batch-size is 0; it must be at least 1." },
            { "world size", Valid with { DataParallel = 4 }, Llama, "world size 8 != data 4 x tensor 2 x pipeline 2 x context 1 = 16." },
            { "heads", Valid with { TensorParallel = 3, DataParallel = 1, PipelineParallel = 1, SequenceParallel = false, GlobalBatch = 8 },
                Llama with { FfnHiddenSize = 11010 }, "--num-attention-heads 32 is not divisible by --tensor-model-parallel-size 3." },
            { "groups", Valid, ModelPresets.All["llama-7b"] with { NumAttentionHeads = 32, NumQueryGroups = 1 },
                "--num-query-groups 1 is not divisible by --tensor-model-parallel-size 2." },
            { "ffn", Valid, Llama with { FfnHiddenSize = 11009 }, "--ffn-hidden-size 11009 is not divisible by --tensor-model-parallel-size 2." },
            { "layers", Valid, Llama with { NumLayers = 31 }, "--num-layers 31 is not divisible by --pipeline-model-parallel-size 2; give the first or last stage its own number of layers (--decoder-first-pipeline-num-layers, --decoder-last-pipeline-num-layers) to split the rest evenly." },
            // Megatron's rules for uneven stages (TransformerConfig.__post_init__, training/arguments.py).
            { "first at least 1", Valid with { LayersInFirstPipelineStage = 0 }, Llama, "--decoder-first-pipeline-num-layers is 0; it must be at least 1." },
            { "last at least 1", Valid with { LayersInLastPipelineStage = -2 }, Llama, "--decoder-last-pipeline-num-layers is -2; it must be at least 1." },
            { "uneven not interleaved", Valid with { LayersInFirstPipelineStage = 16, LayersPerVirtualStage = 4 }, Llama,
                "--num-layers-per-virtual-pipeline-stage cannot be combined with --decoder-first-pipeline-num-layers or --decoder-last-pipeline-num-layers: Megatron asks for --num-virtual-stages-per-pipeline-rank with uneven stages, which Harness does not model." },
            { "first and last need two stages", Valid with { PipelineParallel = 1, DataParallel = 4, LayersInFirstPipelineStage = 16, LayersInLastPipelineStage = 16 }, Llama,
                "--decoder-first-pipeline-num-layers and --decoder-last-pipeline-num-layers name two stages but --pipeline-model-parallel-size is 1." },
            { "first and last exceed", Valid with { PipelineParallel = 4, DataParallel = 1, LayersInFirstPipelineStage = 20, LayersInLastPipelineStage = 20 }, Llama,
                "the first and last pipeline stages' 40 layers exceed --num-layers 32." },
            { "no middle stage", Valid with { LayersInFirstPipelineStage = 10, LayersInLastPipelineStage = 10 }, Llama,
                "12 layers remain for 0 middle pipeline stages; the first and last stages' layers must leave some layers for every middle stage and none without one." },
            { "middle stages without layers", Valid with { PipelineParallel = 4, DataParallel = 1, LayersInFirstPipelineStage = 16, LayersInLastPipelineStage = 16 }, Llama,
                "0 layers remain for 2 middle pipeline stages; the first and last stages' layers must leave some layers for every middle stage and none without one." },
            { "middle divides", Valid with { PipelineParallel = 4, DataParallel = 1, LayersInFirstPipelineStage = 5, LayersInLastPipelineStage = 6 }, Llama,
                "the 21 layers between the first and last pipeline stages are not divisible by the 2 middle stages." },
            { "counted ends with uneven stages", Valid with { LayersInFirstPipelineStage = 15, AccountForLossInPipelineSplit = true }, Llama,
                "--account-for-embedding-in-pipeline-split and --account-for-loss-in-pipeline-split cannot be combined with --decoder-first-pipeline-num-layers or --decoder-last-pipeline-num-layers (Megatron's TransformerConfig refuses them together)." },
            { "counted ends divide", Valid with { AccountForEmbeddingInPipelineSplit = true }, Llama,
                "--num-layers 32 with the embedding counted as layers (33) is not divisible by --pipeline-model-parallel-size 2; give the first or last stage its own number of layers (--decoder-first-pipeline-num-layers, --decoder-last-pipeline-num-layers) to split the rest evenly." },
            { "counted ends interleaved", Valid with { AccountForEmbeddingInPipelineSplit = true, AccountForLossInPipelineSplit = true, LayersPerVirtualStage = 4 }, Llama,
                "--num-layers 32 with the embedding and loss counted as layers (34) is not divisible by pipeline 2 x layers per virtual stage 4." },
            { "uniform divides every stage", Valid with { PipelineParallel = 4, DataParallel = 1, LayersInFirstPipelineStage = 6, LayersInLastPipelineStage = 6, Recompute = RecomputeSpec.FullUniform(2) },
                Llama with { NumLayers = 30 }, "--recompute-num-layers 2 does not divide the 9 layers of a model chunk (uniform method)." },
            { "block within the smallest stage", Valid with { PipelineParallel = 4, DataParallel = 1, LayersInFirstPipelineStage = 6, LayersInLastPipelineStage = 6, Recompute = new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 7) },
                Llama with { NumLayers = 30 }, "--recompute-num-layers 7 exceeds the 6 layers of a pipeline stage's model chunk." },
            { "virtual at least 1", Valid with { LayersPerVirtualStage = 0 }, Llama, "--num-layers-per-virtual-pipeline-stage is 0; it must be at least 1." },
            { "virtual divides", Valid with { LayersPerVirtualStage = 5 }, Llama, "--num-layers 32 is not divisible by pipeline 2 x layers per virtual stage 5." },
            { "virtual needs pp", Valid with { PipelineParallel = 1, DataParallel = 4, LayersPerVirtualStage = 4 }, Llama,
                "--num-layers-per-virtual-pipeline-stage needs --pipeline-model-parallel-size of at least 2." },
            { "virtual two chunks", Valid with { LayersPerVirtualStage = 16 }, Llama,
                "--num-layers-per-virtual-pipeline-stage 16 gives one model chunk per pipeline rank; interleaving needs at least 2." },
            { "interleaved micro-batches", Valid with { LayersPerVirtualStage = 4, GlobalBatch = 6 }, Llama,
                "the interleaved schedule needs the number of micro-batches (3) to be a multiple of --pipeline-model-parallel-size 2." },
            { "global batch", Valid with { GlobalBatch = 15 }, Llama, "--global-batch-size 15 is not divisible by --micro-batch-size 1 x data-parallel size 2." },
            { "sp needs tp", Valid with { TensorParallel = 1, DataParallel = 4 }, Llama, "--sequence-parallel needs --tensor-model-parallel-size of at least 2." },
            { "cp divides s", Valid with { ContextParallel = 2, DataParallel = 1 }, Llama with { SeqLength = 4098 },
                "--seq-length 4098 is not divisible by 2 x --context-parallel-size 2 (causal load balancing)." },
            { "a2a divides heads", Valid with { ContextParallel = 2, DataParallel = 1, ContextParallelComm = ContextParallelCommType.A2a },
                Llama with { NumQueryGroups = 2 },
                "--cp-comm-type a2a splits each tensor-parallel rank's attention heads (16) and query groups (1) over 2 context-parallel ranks; both must be divisible by 2." },
            { "a2a+p2p needs sizes", Valid with { ContextParallel = 2, DataParallel = 1, ContextParallelComm = ContextParallelCommType.A2aP2p }, Llama,
                "--cp-comm-type a2a+p2p needs --hierarchical-context-parallel-sizes (the all-to-all and ring sizes), as Megatron asserts." },
            { "sizes need a2a+p2p", Valid with { ContextParallel = 2, DataParallel = 1, HierarchicalAllToAllSize = 2 }, Llama,
                "--hierarchical-context-parallel-sizes applies only with --cp-comm-type a2a+p2p, not p2p." },
            { "two levels", Valid with { ContextParallel = 2, DataParallel = 1, ContextParallelComm = ContextParallelCommType.A2aP2p, HierarchicalAllToAllSize = 2 }, Llama,
                "--hierarchical-context-parallel-sizes has an all-to-all level of 2 for --context-parallel-size 2; a2a+p2p needs both levels above 1 and their product c (one level is --cp-comm-type a2a or p2p)." },
            { "a2a+p2p divides heads", Valid with { TensorParallel = 1, SequenceParallel = false, ContextParallel = 4, DataParallel = 1,
                    ContextParallelComm = ContextParallelCommType.A2aP2p, HierarchicalAllToAllSize = 2 }, Llama with { NumQueryGroups = 1 },
                "--cp-comm-type a2a+p2p splits each tensor-parallel rank's attention heads (32) and query groups (1) over 2 context-parallel ranks; both must be divisible by 2." },
            { "sp divides s", Valid with { TensorParallel = 8, DataParallel = 1, PipelineParallel = 1 }, Llama with { SeqLength = 4100 },
                "--seq-length 4100 per context rank is not divisible by --tensor-model-parallel-size 8 (sequence parallel)." },
            { "alpha range", Valid with { OffloadRatio = 1.5 }, Llama, "offload ratio 1.5 is outside [0, 1]." },
            { "alpha interleaved", Valid with { OffloadRatio = 0.5 }, Llama,
                "activation offload (Megatron-Kwai) needs the interleaved schedule (--num-layers-per-virtual-pipeline-stage)." },
            { "alpha p3", Valid with { OffloadRatio = 0.5, LayersPerVirtualStage = 4 }, Llama,
                "activation offload (Megatron-Kwai) needs --pipeline-model-parallel-size of at least 3, not 2." },
            { "zero", Valid with { ZeroStage = 4 }, Llama, "ZeRO stage 4 is not one of 0, 1, 2, 3." },
            { "zero 2 pipelined", Valid with { ZeroStage = 2 }, Llama, ZeroWithPipeline(2, 2) },
            { "zero 3 pipelined", Valid with { ZeroStage = 3, DataParallel = 1, PipelineParallel = 4 }, Llama, ZeroWithPipeline(3, 4) },
            { "p range", Valid with { SyncFactor = -0.5 }, Llama, "sync factor p -0.5 is outside [0, 1]." },
            { "p needs tp", Valid with { SyncFactor = 0.5, TensorParallel = 1, DataParallel = 4, SequenceParallel = false }, Llama,
                "sync factor p 0.5 < 1 needs --tensor-model-parallel-size of at least 2." },
            { "p without sp", Valid with { SyncFactor = 0.5 }, Llama,
                "partial synchronization (p < 1) replaces the full all-reduce and cannot be combined with --sequence-parallel." },
            { "recompute layers positive", Valid with { Recompute = RecomputeSpec.FullUniform(0) }, Llama, "--recompute-num-layers is 0; it must be at least 1." },
            { "block too many", Valid with { Recompute = new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 17) }, Llama,
                "--recompute-num-layers 17 exceeds the 16 layers of a pipeline stage's model chunk." },
            { "uniform divides", Valid with { Recompute = RecomputeSpec.FullUniform(3) }, Llama,
                "--recompute-num-layers 3 does not divide the 16 layers of a model chunk (uniform method)." },
            { "kwai with full", Valid with { Recompute = RecomputeSpec.FullUniform() with { NormOutputs = true } }, Llama,
                "Megatron-Kwai's norm/activation recompute cannot be combined with full recomputation." },
            { "kwai swiglu", new RunDescription(DataParallel: 8, GlobalBatch: 8, Recompute: RecomputeSpec.Kwai), gpt,
                "--kaimm-recompute-mlp-activation-func needs a SwiGLU model (--swiglu)." },
            { "kwai norm sp", Valid with { SequenceParallel = false, Recompute = RecomputeSpec.Kwai }, Llama,
                "--kaimm-recompute-norm needs --sequence-parallel when tensor parallelism is on." },
        };
    }

    private static string ZeroWithPipeline(int stage, int p) =>
        $"ZeRO stage {stage} cannot run with --pipeline-model-parallel-size {p}: DeepSpeed's pipeline engine refuses stages 2 and 3 "
        + "(deepspeed/runtime/pipe/engine.py asserts stage < 2) because their per-micro-batch gradient reduce-scatters, and stage 3's "
        + "weight gathers, would repeat for every micro-batch on every pipeline stage; Megatron-FSDP (--use-megatron-fsdp) shards with pipelining.";

    [Fact]
    public void TheBaseConfigIsValid() => Assert.Empty(Valid.Validate(Llama, 8));

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void EveryZeroStageRunsWithoutPipelineParallelism(int stage) =>
        Assert.Empty((Valid with { PipelineParallel = 1, DataParallel = 4, ZeroStage = stage }).Validate(Llama, 8));

    [Fact]
    public void ZeroStageOneRunsWithPipelineParallelism() => Assert.Empty((Valid with { ZeroStage = 1 }).Validate(Llama, 8));

    [Theory]
    [MemberData(nameof(Cases))]
    public void EachReasonIsGiven(string label, RunDescription config, ModelSpec model, string reason)
    {
        var reasons = config.Validate(model, 8);
        Assert.True(reasons.Contains(reason), $"{label}: got [{string.Join(" | ", reasons)}]");
    }

    [Fact]
    public void EveryReasonIsGivenAtOnce()
    {
        var bad = Valid with { GlobalBatch = 15, OffloadRatio = 2, ZeroStage = 7 };
        Assert.Equal(3, bad.Validate(Llama, 8).Count);
    }

    [Fact]
    public void ModelReasons()
    {
        Assert.Contains("--num-layers is 0; it must be a positive integer.", (Llama with { NumLayers = 0 }).Validate());
        Assert.Contains("--hidden-size 4096 is not divisible by --num-attention-heads 30.", (Llama with { NumAttentionHeads = 30, NumQueryGroups = 30 }).Validate());
        Assert.Contains("--num-attention-heads 32 is not divisible by --num-query-groups 5.", (Llama with { NumQueryGroups = 5 }).Validate());
    }
}
