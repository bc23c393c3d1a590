using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training;

/// <summary>
/// One training run on one device, in Megatron's terms: the model, the batch (global = micro × accumulation
/// steps), the schedule, the data and where checkpoints go. Immutable; the CLI fills it from flags.
/// <see cref="FusedKernels"/>: on a GPU, the executor's own CUDA kernels (src/Executor/Fused) replace libtorch's
/// operator chains for SwiGLU, the cross-entropy and AdamW (--no-fused-kernels keeps libtorch's, for comparison);
/// <see cref="GradientAccumulationFusion"/>: under bf16 on a GPU, weight-gradient GEMMs add into the float32 main
/// gradients (Megatron's default; --no-gradient-accumulation-fusion folds bf16 gradients after each micro-batch).
/// <see cref="MakeVocabSizeDivisibleBy"/>: the tables' rows padded as Megatron pads them (<see cref="VocabPadding"/>);
/// <see cref="Model"/> keeps the tokenizer's vocabulary, which the data is checked against.
/// <see cref="HiddenDropout"/> and <see cref="AttentionDropout"/>: Megatron's --hidden-dropout and --attention-dropout
/// (the CLI's default: 0.1 each for models whose spec has dropout, as Megatron's GPT; 0 for Llama-style ones).
/// </summary>
public sealed record TrainingOptions(
    ModelSpec Model,
    ExecutionDevice Device = ExecutionDevice.Cpu,
    bool Bf16 = false,
    int MicroBatchSize = 1,
    int GlobalBatchSize = 1,
    long TrainIters = 10,
    LearningRateSchedule? Schedule = null,
    AdamWOptions? Adam = null,
    int Seed = 1234,
    RecomputeGranularity Recompute = RecomputeGranularity.None,
    string? DataPath = null,
    bool MockData = false,
    string? Save = null,
    string? Load = null,
    long SaveInterval = 0,
    GpuSpec? Gpu = null,
    string? Libtorch = null,
    ProfileRange? Profile = null,
    bool FusedKernels = true,
    bool GradientAccumulationFusion = true,
    int MakeVocabSizeDivisibleBy = VocabPadding.MegatronDefault,
    double HiddenDropout = 0,
    double AttentionDropout = 0)
{
    /// <summary>Micro-batches per iteration (gradient accumulation steps).</summary>
    public int AccumulationSteps => GlobalBatchSize / MicroBatchSize;

    public LearningRateSchedule LearningRate => Schedule ?? new LearningRateSchedule(1e-4, 1e-5, 0, TrainIters);

    public AdamWOptions AdamOptions => Adam ?? new AdamWOptions();

    /// <summary>Whether to save a checkpoint once <paramref name="iterations"/> are done: every --save-interval, and after the last.</summary>
    public bool CheckpointDue(long iterations) => Save is not null && (iterations == TrainIters || (SaveInterval > 0 && iterations % SaveInterval == 0));

    /// <summary>MFU of an iteration at <paramref name="tflopsPerGpu"/> model TFLOP/s, against the --gpu preset's dense bf16
    /// peak; none on CPU, which has no such peak.</summary>
    public double? Mfu(double tflopsPerGpu) => Device == ExecutionDevice.Cuda && Gpu is not null ? tflopsPerGpu * 1e12 / Gpu.PeakBf16Flops : null;

    /// <summary>Every reason these options cannot run, as sentences naming the flag.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>(Model.Validate());
        if (MicroBatchSize < 1) errors.Add($"--micro-batch-size is {MicroBatchSize}; it must be at least 1.");
        else if (GlobalBatchSize < 1 || GlobalBatchSize % MicroBatchSize != 0)
            errors.Add($"--global-batch-size {GlobalBatchSize} must be a positive multiple of --micro-batch-size {MicroBatchSize}.");
        if (TrainIters < 1) errors.Add($"--train-iters is {TrainIters}; it must be at least 1.");
        if (DataPath is null == !MockData) errors.Add("Give exactly one of --data-path PREFIX and --mock-data.");
        if (Save is not null && File.Exists(Save)) errors.Add($"--save '{Save}' is a file; it must name a checkpoint folder (new or existing).");
        if (Save is not null && SaveInterval < 0) errors.Add($"--save-interval is {SaveInterval}; it must be 0 (only at the end) or positive.");
        if (Bf16 && Device == ExecutionDevice.Cpu) errors.Add("--bf16 is for --device cuda; CPU runs train in float32.");
        if (Profile is not null) errors.AddRange(Profile.Validate(Device, TrainIters));
        foreach (var (flag, p) in new[] { ("--hidden-dropout", HiddenDropout), ("--attention-dropout", AttentionDropout) })
            if (p is < 0 or >= 1) errors.Add($"{flag} is {p}; a dropout probability is in [0, 1).");
        if (MakeVocabSizeDivisibleBy < 1) errors.Add($"--make-vocab-size-divisible-by is {MakeVocabSizeDivisibleBy}; it must be at least 1.");
        return errors;
    }
}
