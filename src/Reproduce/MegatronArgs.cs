using System.Text.Json.Serialization;

namespace Harness.Reproduce;

/// <summary>
/// The model-parallel and memory knobs of a row, named exactly as Megatron-LM's (and Megatron-Kwai's)
/// command-line arguments so a row reads like the launch command it stands for. Unset fields fall back to
/// the table's defaults (<see cref="Over"/>), then to Megatron's own defaults.
/// </summary>
public sealed record MegatronArgs(
    [property: JsonPropertyName("tensor-model-parallel-size")] int? TensorModelParallelSize = null,
    [property: JsonPropertyName("pipeline-model-parallel-size")] int? PipelineModelParallelSize = null,
    [property: JsonPropertyName("context-parallel-size")] int? ContextParallelSize = null,
    [property: JsonPropertyName("num-layers-per-virtual-pipeline-stage")] int? NumLayersPerVirtualPipelineStage = null,
    [property: JsonPropertyName("sequence-parallel")] bool? SequenceParallel = null,
    [property: JsonPropertyName("micro-batch-size")] int? MicroBatchSize = null,
    [property: JsonPropertyName("global-batch-size")] int? GlobalBatchSize = null,
    [property: JsonPropertyName("recompute-granularity")] string? RecomputeGranularity = null,
    [property: JsonPropertyName("recompute-method")] string? RecomputeMethod = null,
    [property: JsonPropertyName("recompute-num-layers")] int? RecomputeNumLayers = null,
    [property: JsonPropertyName("kaimm-recompute-norm")] bool? KaimmRecomputeNorm = null,
    [property: JsonPropertyName("kaimm-recompute-mlp-activation-func")] bool? KaimmRecomputeMlpActivationFunc = null,
    [property: JsonPropertyName("kaimm-offload-activation-ratio")] double? KaimmOffloadActivationRatio = null,
    [property: JsonPropertyName("use-distributed-optimizer")] bool? UseDistributedOptimizer = null,
    [property: JsonPropertyName("use-flash-attn")] bool? UseFlashAttn = null,
    [property: JsonPropertyName("bf16")] bool? Bf16 = null,
    [property: JsonPropertyName("fp16")] bool? Fp16 = null,
    [property: JsonPropertyName("accumulate-allreduce-grads-in-fp32")] bool? AccumulateAllreduceGradsInFp32 = null,
    [property: JsonPropertyName("no-context-parallel-comm-overlap-gemm")] bool? NoContextParallelCommOverlapGemm = null)
{
    /// <summary>These arguments with every one <paramref name="over"/> sets replaced (a row over its table's defaults).</summary>
    public MegatronArgs Over(MegatronArgs? over) => over is null ? this : new(
        over.TensorModelParallelSize ?? TensorModelParallelSize,
        over.PipelineModelParallelSize ?? PipelineModelParallelSize,
        over.ContextParallelSize ?? ContextParallelSize,
        over.NumLayersPerVirtualPipelineStage ?? NumLayersPerVirtualPipelineStage,
        over.SequenceParallel ?? SequenceParallel,
        over.MicroBatchSize ?? MicroBatchSize,
        over.GlobalBatchSize ?? GlobalBatchSize,
        over.RecomputeGranularity ?? RecomputeGranularity,
        over.RecomputeMethod ?? RecomputeMethod,
        over.RecomputeNumLayers ?? RecomputeNumLayers,
        over.KaimmRecomputeNorm ?? KaimmRecomputeNorm,
        over.KaimmRecomputeMlpActivationFunc ?? KaimmRecomputeMlpActivationFunc,
        over.KaimmOffloadActivationRatio ?? KaimmOffloadActivationRatio,
        over.UseDistributedOptimizer ?? UseDistributedOptimizer,
        over.UseFlashAttn ?? UseFlashAttn,
        over.Bf16 ?? Bf16,
        over.Fp16 ?? Fp16,
        over.AccumulateAllreduceGradsInFp32 ?? AccumulateAllreduceGradsInFp32,
        over.NoContextParallelCommOverlapGemm ?? NoContextParallelCommOverlapGemm);
}
