namespace Harness.Simulator.Specs;

/// <summary>Megatron's --lr-decay-style.</summary>
public enum LearningRateDecayStyle { Constant, Linear, Cosine, InverseSquareRoot }

/// <summary>What --load reads: a checkpoint of this harness (Megatron's folder layout, resumed where it stopped), or a Hugging Face
/// model folder (config.json and safetensors weights), whose weights start the run at iteration 0.</summary>
public enum LoadFormat { Harness, Hf }

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

/// <summary>Megatron's Adam and clipping flags: --adam-beta1, --adam-beta2, --adam-eps, --weight-decay, --clip-grad (the last two
/// apply to --optimizer sgd too).</summary>
public sealed record AdamSettings(double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8, double WeightDecay = 0.01, double ClipGrad = 1.0);

/// <summary>
/// Megatron's loss-scaling flags (megatron/training/arguments.py, _add_mixed_precision_args, NVIDIA/Megatron-LM d98e8a6):
/// --loss-scale, a constant scale (none: dynamic scaling under fp16), and the dynamic scaler's --initial-loss-scale (2^32),
/// --min-loss-scale (1), --loss-scale-window (1000 overflow-free iterations before the scale doubles) and --hysteresis (2
/// overflowing iterations before it halves). Which runs scale their loss is Megatron's rule, applied by the executor.
/// </summary>
public sealed record LossScaleSettings(
    double? Constant = null,
    double Initial = 4294967296,
    double Min = 1,
    int Window = 1000,
    int Hysteresis = 2)
{
    /// <summary>Every reason these settings cannot run, as sentences naming the flag (Megatron's DynamicGradScaler asserts the
    /// same bounds: a positive scale, 0 &lt; min &lt;= initial, a positive window and hysteresis).</summary>
    public IEnumerable<string> Validate()
    {
        if (Constant is double c && !(double.IsFinite(c) && c > 0)) yield return $"--loss-scale is {FlagText.Of(c)}; a loss scale is a finite number above 0.";
        if (!(double.IsFinite(Initial) && Initial > 0)) yield return $"--initial-loss-scale is {FlagText.Of(Initial)}; a loss scale is a finite number above 0.";
        if (!(double.IsFinite(Min) && Min > 0)) yield return $"--min-loss-scale is {FlagText.Of(Min)}; a loss scale is a finite number above 0.";
        else if (Min > Initial && double.IsFinite(Initial) && Initial > 0) yield return $"--min-loss-scale {FlagText.Of(Min)} exceeds --initial-loss-scale {FlagText.Of(Initial)}.";
        if (Window < 1) yield return $"--loss-scale-window is {Window}; it must be at least 1 iteration.";
        if (Hysteresis < 1) yield return $"--hysteresis is {Hysteresis}; it must be at least 1 iteration.";
    }
}

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
/// trains and at which rates, its data, where it reads and writes, how it is launched and reported, and whether its kernels
/// must be deterministic (<paramref name="DeterministicMode"/>: a cost the simulator leaves out).
/// </summary>
/// <param name="Gpu">The GPU preset whose dense peak gives a GPU run's MFU (and that `validate` simulates on).</param>
/// <param name="MakeVocabSizeDivisibleBy">Megatron's padding of the embedding and output tables to a multiple of this times t.</param>
/// <param name="RanksOnOneDevice">All <see cref="NprocPerNode"/> ranks as threads of one process on one device (on CUDA, GPU 0),
/// exchanging tensors through the in-process backend: every layout runs where one device is all there is, with the memory of
/// all ranks on it and timings that are not a cluster's.</param>
/// <param name="DataPath">Megatron's --data-path: the datasets, blended by weight, whose documents --split cuts into the shares.</param>
/// <param name="TrainDataPath">Megatron's --train-data-path: the training share's own datasets (then --valid-data-path and
/// --test-data-path give the others', each optional), instead of --data-path and --split.</param>
/// <param name="Split">Megatron's --split of the dataset's documents into training, validation and test shares; null: every
/// document trains and there is no validation set.</param>
/// <param name="EvalInterval">Megatron's --eval-interval: iterations between validation losses (one more after the last iteration).</param>
/// <param name="EvalIters">Megatron's --eval-iters: global batches of the validation share each validation loss averages over.</param>
/// <param name="ExitInterval">Megatron's --exit-interval: save (with --save) and exit once the iterations done are a multiple of it.</param>
/// <param name="ExitDurationInMins">Megatron's --exit-duration-in-mins: save (with --save) and exit after the first iteration
/// that ends more than this many minutes after the run started.</param>
/// <param name="Overwrite">Harness's --overwrite: a new run may write into an --out that holds a run's metrics.csv (replacing
/// it) and a --save that holds checkpoints it does not --load.</param>
/// <param name="CheckForNanInLossAndGrad">Megatron's --check-for-nan-in-loss-and-grad (on; --no-check-for-nan-in-loss-and-grad
/// turns it off): a NaN or Inf loss, or gradient norm without a loss scaler, stops the run.</param>
/// <param name="DeterministicMode">Megatron's --deterministic-mode: deterministic kernels only (PyTorch's
/// use_deterministic_algorithms), so the same run gives the same losses bit for bit. The run's description records the
/// attention kernel it leaves (flash, never cuDNN's); the rest of what it costs (flash's deterministic backward, libtorch's
/// NaN fill of every new uninitialized tensor, sort-based index accumulation, NCCL's Ring) the simulator does not model.</param>
/// <param name="TensorBoard">Megatron's TensorBoard flags: where and which scalars the run writes as event files.</param>
/// <param name="LoadFormat">Harness's --load-format: what --load names.</param>
public sealed record RunSettings(
    long TrainIters = 150,
    int Seed = 1234,
    LearningRateSettings? LearningRate = null,
    AdamSettings? Adam = null,
    LossScaleSettings? LossScale = null,
    DataBlend? DataPath = null,
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
    string Gpu = GpuPresets.DefaultName,
    int NprocPerNode = 1,
    int? MasterPort = null,
    bool RanksOnOneDevice = false,
    DataSplit? Split = null,
    long EvalInterval = 1000,
    long EvalIters = 100,
    long? ExitInterval = null,
    int? ExitDurationInMins = null,
    bool Overwrite = false,
    bool CheckForNanInLossAndGrad = true,
    TensorBoardSettings? TensorBoard = null,
    DataBlend? TrainDataPath = null,
    DataBlend? ValidDataPath = null,
    DataBlend? TestDataPath = null,
    LoadFormat LoadFormat = LoadFormat.Harness,
    bool DeterministicMode = false)
{
    /// <summary>Whether the shares have datasets of their own (Megatron's blend_per_split).</summary>
    public bool PerSplitData => TrainDataPath is not null || ValidDataPath is not null || TestDataPath is not null;

    public LearningRateSettings LearningRateOrDefault => LearningRate ?? new();
    public AdamSettings AdamOrDefault => Adam ?? new();
    public LossScaleSettings LossScaleOrDefault => LossScale ?? new();
    public TensorBoardSettings TensorBoardOrDefault => TensorBoard ?? new();

    /// <summary>Every reason these settings cannot run, as sentences naming the flag.</summary>
    public IReadOnlyList<string> Validate()
    {
        var e = new List<string>();
        var l = LearningRateOrDefault;
        var a = AdamOrDefault;
        static bool Finite(double x) => double.IsFinite(x);
        if (TrainIters < 1) e.Add($"--train-iters is {TrainIters}; it must be at least 1.");
        if (!Finite(l.Lr) || l.Lr < 0) e.Add($"--lr is {FlagText.Of(l.Lr)}; a learning rate is a finite number of at least 0.");
        // A min-lr checked against a wrong --lr would only echo that mistake.
        else if (!Finite(l.MinLr) || l.MinLr < 0 || l.MinLr > l.Lr) e.Add($"--min-lr {FlagText.Of(l.MinLr)} must be in [0, --lr {FlagText.Of(l.Lr)}].");
        if (l.WarmupIters < 0) e.Add($"--lr-warmup-iters is {l.WarmupIters}; it must be at least 0.");
        if (l.WarmupFraction is double f && (f is < 0 or > 1 || double.IsNaN(f))) e.Add($"--lr-warmup-fraction {FlagText.Of(f)} is outside [0, 1].");
        // Megatron's validate_args: "can only specify one of lr-warmup-fraction and lr-warmup-iters".
        if (l.WarmupFraction is not null && l.WarmupIters != 0) e.Add("pass one of --lr-warmup-fraction and --lr-warmup-iters, not both.");
        long decay = l.DecayIters ?? TrainIters;
        if (l.DecayIters is < 1) e.Add($"--lr-decay-iters is {l.DecayIters}; it must be at least 1.");
        else if (l.WarmupIters > decay && decay >= 1) e.Add($"--lr-warmup-iters {l.WarmupIters} exceeds the {decay} decay iterations (--lr-decay-iters, default --train-iters).");
        if (a.Beta1 is < 0 or >= 1 || double.IsNaN(a.Beta1)) e.Add($"--adam-beta1 {FlagText.Of(a.Beta1)} is outside [0, 1).");
        if (a.Beta2 is < 0 or >= 1 || double.IsNaN(a.Beta2)) e.Add($"--adam-beta2 {FlagText.Of(a.Beta2)} is outside [0, 1).");
        if (!Finite(a.Epsilon) || a.Epsilon <= 0) e.Add($"--adam-eps is {FlagText.Of(a.Epsilon)}; it must be above 0.");
        if (!Finite(a.WeightDecay) || a.WeightDecay < 0) e.Add($"--weight-decay is {FlagText.Of(a.WeightDecay)}; it must be at least 0.");
        if (!Finite(a.ClipGrad) || a.ClipGrad < 0) e.Add($"--clip-grad is {FlagText.Of(a.ClipGrad)}; it must be at least 0 (0 = off).");
        e.AddRange(LossScaleOrDefault.Validate());
        // Megatron's validate_args: "A single data source must be provided"; BlendedMegatronDatasetConfig: "split and
        // blend_per_split are incompatible".
        if (DataPath is not null && MockData) e.Add("Give one of --data-path PREFIX and --mock-data, not both.");
        if (PerSplitData && (DataPath is not null || MockData))
            e.Add("Give one data source: --data-path, --mock-data, or --train-data-path (with --valid-data-path, --test-data-path).");
        if (PerSplitData && TrainDataPath is null) e.Add("--valid-data-path and --test-data-path go with --train-data-path, which names the datasets to train on; give it.");
        if (PerSplitData && Split is not null) e.Add($"--split {Split} cuts --data-path's datasets; --train-data-path, --valid-data-path and --test-data-path name each share's own: remove --split.");
        if (LoadFormat == LoadFormat.Hf && Load is null) e.Add("--load-format hf names what --load reads; give --load with a Hugging Face model folder.");
        if (SaveInterval < 0) e.Add($"--save-interval is {SaveInterval}; it must be 0 (only at the end) or positive.");
        if (LogInterval < 1) e.Add($"--log-interval is {LogInterval}; it must be at least 1.");
        if (TensorBoardOrDefault.LogInterval < 1) e.Add($"--tensorboard-log-interval is {TensorBoardOrDefault.LogInterval}; it must be at least 1.");
        if (MakeVocabSizeDivisibleBy < 1) e.Add($"--make-vocab-size-divisible-by is {MakeVocabSizeDivisibleBy}; it must be at least 1.");
        if (NprocPerNode < 1) e.Add($"--nproc-per-node is {NprocPerNode}; it must be at least 1.");
        else if (RanksOnOneDevice && NprocPerNode < 2) e.Add($"--ranks-on-one-device puts the --nproc-per-node ranks on one device; --nproc-per-node is {NprocPerNode}, give at least 2.");
        if (MasterPort is < 1 or > 65535) e.Add($"--master-port {MasterPort} is not a TCP port (1 to 65535).");
        if (Profile is not null) e.AddRange(Profile.Validate(Device, TrainIters));
        if (Split?.Problem is string split) e.Add(split);
        if (EvalInterval < 1) e.Add($"--eval-interval is {EvalInterval}; it must be at least 1 iteration.");
        if (EvalIters < 0) e.Add($"--eval-iters is {EvalIters}; it must be at least 0 (0: no validation loss).");
        if (ExitInterval is < 1) e.Add($"--exit-interval is {ExitInterval}; it must be at least 1 iteration.");
        if (ExitDurationInMins is < 1) e.Add($"--exit-duration-in-mins is {ExitDurationInMins}; it must be at least 1 minute.");
        return e;
    }

    /// <summary>Whether the run computes validation losses: its split holds validation documents, or --valid-data-path names
    /// datasets, and --eval-iters is not 0 (Megatron's do_valid).</summary>
    public bool Validates => (Split is { Valid: > 0 } || ValidDataPath is not null) && EvalIters > 0;

    /// <summary>Whether a validation loss follows iteration <paramref name="iterations"/>: every --eval-interval and after the last
    /// (Megatron's train loop and its evaluation at the end of training).</summary>
    public bool ValidationDue(long iterations) => Validates && (iterations % EvalInterval == 0 || iterations == TrainIters);

    /// <summary>Whether to save a checkpoint once <paramref name="iterations"/> are done: every --save-interval, and after the last.</summary>
    public bool CheckpointDue(long iterations) => Save is not null && (iterations == TrainIters || (SaveInterval > 0 && iterations % SaveInterval == 0));

    /// <summary>Whether --exit-interval ends the run once <paramref name="iterations"/> are done (Megatron's
    /// checkpoint_and_decide_exit: iteration % exit_interval == 0), before --train-iters.</summary>
    public bool ExitDue(long iterations) => ExitInterval is long n && iterations % n == 0 && iterations < TrainIters;
}
