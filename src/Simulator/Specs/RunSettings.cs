namespace Harness.Simulator.Specs;

/// <summary>Megatron's --lr-decay-style.</summary>
public enum LearningRateDecayStyle { Constant, Linear, Cosine, InverseSquareRoot }

/// <summary>Where a run executes: threads of this process on CPU, or one process per NVIDIA GPU.</summary>
public enum ExecutionDevice { Cpu, Cuda }

/// <summary>
/// Megatron's learning-rate schedule flags (OptimizerParamScheduler): --lr, --min-lr, --lr-decay-style,
/// --lr-warmup-iters or --lr-warmup-fraction (of the decay iterations), --lr-decay-iters (default: --train-iters).
/// </summary>
public sealed record LearningRateSettings(
    double Lr = 1e-4,
    double MinLr = 0,
    LearningRateDecayStyle DecayStyle = LearningRateDecayStyle.Linear,
    long WarmupIters = 0,
    double? WarmupFraction = null,
    long? DecayIters = null);

/// <summary>Megatron's Adam and clipping flags: --adam-beta1, --adam-beta2, --adam-eps, --weight-decay, --clip-grad.</summary>
public sealed record AdamSettings(double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8, double WeightDecay = 0.01, double ClipGrad = 1.0);

/// <summary>
/// Megatron-LM's --profile, --profile-step-start and --profile-step-end: the CUDA profiler range is opened
/// (cudaProfilerStart) before iteration <see cref="StepStart"/> + 1 and closed (cudaProfilerStop) after iteration
/// <see cref="StepEnd"/>, so `nsys profile --capture-range=cudaProfilerApi` or `ncu --profile-from-start off`
/// records only those steady-state iterations. Megatron's defaults: 10 and 12.
/// </summary>
public sealed record ProfileRange(long StepStart = 10, long StepEnd = 12)
{
    public IEnumerable<string> Validate(ExecutionDevice device, long trainIters)
    {
        if (device != ExecutionDevice.Cuda) yield return "--profile marks a CUDA profiler range; it needs --device cuda.";
        if (StepStart < 0 || StepEnd <= StepStart)
            yield return $"--profile-step-start {StepStart} and --profile-step-end {StepEnd} must satisfy 0 <= start < end.";
        else if (StepEnd > trainIters)
            yield return $"--profile-step-end {StepEnd} is past --train-iters {trainIters}; the range would never close.";
    }
}

/// <summary>
/// What a run needs besides its <see cref="RunDescription"/> that changes neither its cost nor its arithmetic: how long it
/// trains and at which rates, its data, where it reads and writes, how it is launched and reported.
/// </summary>
/// <param name="Gpu">The GPU preset whose dense peak gives a GPU run's MFU (and that `validate` simulates on).</param>
/// <param name="MakeVocabSizeDivisibleBy">Megatron's padding of the embedding and output tables to a multiple of this times t.</param>
public sealed record RunSettings(
    long TrainIters = 10,
    int Seed = 1234,
    LearningRateSettings? LearningRate = null,
    AdamSettings? Adam = null,
    string? DataPath = null,
    bool MockData = false,
    string? Save = null,
    string? Load = null,
    long SaveInterval = 0,
    int LogInterval = 100,
    string? Out = null,
    ProfileRange? Profile = null,
    int MakeVocabSizeDivisibleBy = 128,
    ExecutionDevice Device = ExecutionDevice.Cpu,
    string? Libtorch = null,
    string Gpu = "h100-sxm",
    int NprocPerNode = 1,
    int? MasterPort = null)
{
    public LearningRateSettings LearningRateOrDefault => LearningRate ?? new();
    public AdamSettings AdamOrDefault => Adam ?? new();

    /// <summary>Whether to save a checkpoint once <paramref name="iterations"/> are done: every --save-interval, and after the last.</summary>
    public bool CheckpointDue(long iterations) => Save is not null && (iterations == TrainIters || (SaveInterval > 0 && iterations % SaveInterval == 0));
}
