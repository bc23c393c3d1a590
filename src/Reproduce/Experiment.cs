using System.Text.Json.Serialization;

namespace Harness.Reproduce;

/// <summary>
/// One published table as data (a file under experiments/): where it comes from, the model and cluster,
/// each row's configuration in Megatron-LM's argument names and the published values, and the convention
/// the paper counts FLOPs by. Knobs the paper leaves out are listed in <see cref="Unknowns"/> and, where the
/// reproduction must pick them, in <see cref="Choose"/>. A <see cref="HeldOut"/> table checks that the model
/// generalizes: published measurements no constant was set from, reported beside the targets but not pooled into them.
/// </summary>
public sealed record Experiment(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("title")] string Title,
    [property: JsonPropertyName("source")] Source Source,
    [property: JsonPropertyName("metric")] string Metric,
    [property: JsonPropertyName("cluster")] ClusterRef Cluster,
    [property: JsonPropertyName("rows")] IReadOnlyList<ExperimentRow> Rows,
    [property: JsonPropertyName("flop_counting")] FlopCounting? FlopCounting = null,
    [property: JsonPropertyName("model")] ModelRef? Model = null,
    [property: JsonPropertyName("defaults")] ExperimentArgs? Defaults = null,
    [property: JsonPropertyName("choose")] ChoiceSpace? Choose = null,
    [property: JsonPropertyName("system")] string? System = null,
    [property: JsonPropertyName("systems")] IReadOnlyDictionary<string, SystemProfile>? Systems = null,
    [property: JsonPropertyName("unknowns")] IReadOnlyList<string>? Unknowns = null,
    [property: JsonPropertyName("order")] IReadOnlyList<string>? Order = null,
    [property: JsonPropertyName("measured_as")] string? MeasuredAs = null,
    [property: JsonPropertyName("held_out")] bool HeldOut = false)
{
    /// <summary>What the table reports, parsed from <see cref="Metric"/>.</summary>
    [JsonIgnore]
    public PaperMetric PaperMetric => PaperMetrics.Parse(Metric);
}

/// <summary>Where the published numbers come from.</summary>
public sealed record Source(
    [property: JsonPropertyName("paper")] string Paper,
    [property: JsonPropertyName("where")] string Where,
    [property: JsonPropertyName("url")] string Url);

/// <summary>
/// How the paper turns a step time into TFLOP/s or MFU: attention counted over the full s×s square
/// (Narayanan et al.) or its causal half (Megatron-Kwai), recomputed FLOPs counted or not, and the peak.
/// </summary>
public sealed record FlopCounting(
    [property: JsonPropertyName("attention")] string Attention,
    [property: JsonPropertyName("recompute_counted")] bool RecomputeCounted,
    [property: JsonPropertyName("formula")] string Formula,
    [property: JsonPropertyName("peak_tflops")] double? PeakTflops = null,
    [property: JsonPropertyName("peak_tflops_by_gpu")] IReadOnlyDictionary<string, double>? PeakTflopsByGpu = null);

/// <summary>A model preset with Megatron-named overrides (any field left out keeps the preset's value).</summary>
public sealed record ModelRef(
    [property: JsonPropertyName("preset")] string? Preset = null,
    [property: JsonPropertyName("name")] string? Name = null,
    [property: JsonPropertyName("num-layers")] int? NumLayers = null,
    [property: JsonPropertyName("hidden-size")] int? HiddenSize = null,
    [property: JsonPropertyName("num-attention-heads")] int? NumAttentionHeads = null,
    [property: JsonPropertyName("num-query-groups")] int? NumQueryGroups = null,
    [property: JsonPropertyName("ffn-hidden-size")] int? FfnHiddenSize = null,
    [property: JsonPropertyName("vocab-size")] int? VocabSize = null,
    [property: JsonPropertyName("seq-length")] int? SeqLength = null)
{
    /// <summary>This reference with every field <paramref name="over"/> sets replaced.</summary>
    public ModelRef With(ModelRef? over) => over is null ? this : new(
        over.Preset ?? Preset, over.Name ?? Name, over.NumLayers ?? NumLayers, over.HiddenSize ?? HiddenSize,
        over.NumAttentionHeads ?? NumAttentionHeads, over.NumQueryGroups ?? NumQueryGroups,
        over.FfnHiddenSize ?? FfnHiddenSize, over.VocabSize ?? VocabSize, over.SeqLength ?? SeqLength);
}

/// <summary>The GPU preset, world size and node size of a table (rows may override the GPU and world size).</summary>
public sealed record ClusterRef(
    [property: JsonPropertyName("gpu")] string Gpu,
    [property: JsonPropertyName("gpus-per-node")] int GpusPerNode,
    [property: JsonPropertyName("gpus")] int? Gpus = null);

/// <summary>
/// A system's implementation choices that the simulator models: which communication it overlaps with compute.
/// The methods of one table (e.g. Megatron-Kwai vs NVIDIA Megatron-LM) differ here, never by a per-row factor.
/// </summary>
public sealed record SystemProfile(
    [property: JsonPropertyName("description")] string Description,
    [property: JsonPropertyName("overlap-tensor-parallel-comm")] bool OverlapTensorParallelComm,
    [property: JsonPropertyName("overlap-grad-reduce")] bool OverlapGradReduce,
    [property: JsonPropertyName("overlap-p2p-communication")] bool OverlapP2pCommunication,
    [property: JsonPropertyName("async-tensor-parallel-allreduce")] bool AsyncTensorParallelAllreduce = true,
    [property: JsonPropertyName("overlap-forward-reduce-scatter")] bool OverlapForwardReduceScatter = true,
    [property: JsonPropertyName("fused-norm")] bool FusedNorm = true,
    [property: JsonPropertyName("fused-elementwise")] bool FusedElementwise = true,
    [property: JsonPropertyName("bias-swiglu-fusion")] bool FusedSwiGlu = true,
    [property: JsonPropertyName("scatter-gather-tensors-in-pipeline")] bool PipelineScatterGather = true,
    [property: JsonPropertyName("gradient-accumulation-fusion")] bool GradientAccumulationFusion = true,
    [property: JsonPropertyName("max-split-size-mb")] int? MaxSplitSizeMb = null,
    [property: JsonPropertyName("cuda-device-max-connections")] int? CudaDeviceMaxConnections = null);

/// <summary>
/// Knobs the paper does not give, with the values the reproduction tries; it keeps the fastest configuration
/// that fits, as the authors tuned theirs. "divisors" for layers per virtual stage means every divisor of L/p
/// that leaves at least two model chunks per GPU.
/// </summary>
public sealed record ChoiceSpace(
    [property: JsonPropertyName("micro-batch-size")] IReadOnlyList<int>? MicroBatchSizes = null,
    [property: JsonPropertyName("num-layers-per-virtual-pipeline-stage")] string? LayersPerVirtualStage = null);

/// <summary>One row of a published table.</summary>
public sealed record ExperimentRow(
    [property: JsonPropertyName("label")] string Label,
    [property: JsonPropertyName("published")] PublishedValues Published,
    [property: JsonPropertyName("args")] ExperimentArgs? Args = null,
    [property: JsonPropertyName("model")] ModelRef? Model = null,
    [property: JsonPropertyName("gpu")] string? Gpu = null,
    [property: JsonPropertyName("gpus")] int? Gpus = null,
    [property: JsonPropertyName("group")] string? Group = null,
    [property: JsonPropertyName("method")] string? Method = null,
    [property: JsonPropertyName("system")] string? System = null,
    [property: JsonPropertyName("x")] double? X = null);

/// <summary>What the paper reports for a row; <see cref="Oom"/> marks a configuration that ran out of memory.</summary>
public sealed record PublishedValues(
    [property: JsonPropertyName("tokens_per_s_per_gpu")] double? TokensPerSecondPerGpu = null,
    [property: JsonPropertyName("tokens_per_s")] double? TokensPerSecond = null,
    [property: JsonPropertyName("mfu")] double? Mfu = null,
    [property: JsonPropertyName("tflops_per_gpu")] double? TflopsPerGpu = null,
    [property: JsonPropertyName("percent_of_peak")] double? PercentOfPeak = null,
    [property: JsonPropertyName("peak_memory_bytes")] long? PeakMemoryBytes = null,
    [property: JsonPropertyName("oom")] bool Oom = false);
