using System.Globalization;
using Harness.Simulator.Specs;

namespace Harness.Megatron;

/// <summary>
/// <see cref="RunSettings"/> by Megatron-LM's argument names (the learning-rate schedule, Adam, loss scaling, data, checkpoints, logging,
/// profiling; megatron/training/arguments.py) and Harness's launch flags (<c>--device</c>, <c>--libtorch</c>, <c>--gpu</c>,
/// <c>--nproc-per-node</c>, <c>--ranks-on-one-device</c>, <c>--master-port</c>, <c>--out</c>). Every default is the record's own (<c>new RunSettings()</c>),
/// Megatron's where Megatron has one.
/// </summary>
public static class RunSettingsFlags
{
    public static readonly Flag[] Flags =
    {
        new("--train-iters", true, "iterations (default 150)"),
        new("--seed", true, "random seed (default 1234)"),
        new("--lr", true, "peak learning rate (default 1e-4; Megatron has none)"),
        new("--min-lr", true, "final learning rate (default 0)"),
        new("--lr-decay-style", true, "constant, linear (default), cosine or inverse-square-root"),
        new("--lr-warmup-iters", true, "linear warm-up iterations (default 0)"),
        new("--lr-warmup-fraction", true, "warm-up as a fraction of the decay iterations (instead of --lr-warmup-iters)"),
        new("--lr-decay-iters", true, "decay length (default --train-iters)"),
        new("--weight-decay", true, "weight decay (default 0.01): AdamW's decoupled, SGD's L2 in the gradient"),
        new("--adam-beta1", true, "default 0.9"), new("--adam-beta2", true, "default 0.999"), new("--adam-eps", true, "default 1e-8"),
        new("--clip-grad", true, "gradient norm limit (default 1.0; 0 = off)"),
        new("--loss-scale", true, "constant loss scale (default: none; dynamic loss scaling under --fp16)"),
        new("--initial-loss-scale", true, "dynamic loss scaling's first scale (default 4294967296 = 2^32)"),
        new("--min-loss-scale", true, "dynamic loss scaling's floor (default 1)"),
        new("--loss-scale-window", true, "overflow-free iterations before the scale doubles (default 1000)"),
        new("--hysteresis", true, "overflowing iterations before the scale halves (default 2)"),
        new("--data-path", true, "prefix of a Megatron .bin/.idx dataset, or weight-prefix pairs W1 PREFIX1 W2 PREFIX2 ... to blend (default: the shipped corpus)", TakesList: true),
        new("--train-data-path", true, "the training share's own dataset(s), as --data-path takes them (instead of --data-path and --split)", TakesList: true),
        new("--valid-data-path", true, "the validation share's own dataset(s), with --train-data-path", TakesList: true),
        new("--test-data-path", true, "the test share's own dataset(s), with --train-data-path (held out, not evaluated)", TakesList: true),
        new("--mock-data", false, "synthetic tokens instead of a dataset"),
        new("--split", true, "training, validation and test weights of the documents, e.g. 969,30,1 (default: all train, no validation)"),
        new("--eval-interval", true, "iterations between validation losses, and one after the last (default 1000)"),
        new("--eval-iters", true, "global batches per validation loss (default 100; 0: none)"),
        new("--save", true, "checkpoint folder"), new("--load", true, "resume from this checkpoint folder"),
        new("--load-format", true, "what --load names: harness (a checkpoint of --save, resumed; default) or hf (a Hugging Face model folder, its weights at iteration 0)"),
        new("--save-interval", true, "iterations between checkpoints (default: only at the end)"),
        // Megatron's switch for what harness run always does (src/Cli/Commands/StopSignals.cs): taken so a Megatron launch
        // line runs unchanged; no field records it, as it changes nothing.
        new("--exit-signal-handler", false, "accepted: on SIGINT or SIGTERM harness run always finishes the iteration, saves and exits"),
        new("--exit-interval", true, "save (with --save) and exit once the iterations done are a multiple of N"),
        new("--exit-duration-in-mins", true, "save (with --save) and exit after the first iteration that ends past M minutes"),
        new("--log-interval", true, "print progress every N iterations (default 100, as Megatron)"),
        new("--make-vocab-size-divisible-by", true, "pad the embedding and output tables to a multiple of this times t, as Megatron does (default 128)"),
        new("--profile", false, "open a CUDA profiler range (nsys --capture-range=cudaProfilerApi, ncu --profile-from-start off)"),
        new("--profile-step-start", true, "the range starts before iteration start + 1 (default 10)"),
        new("--profile-step-end", true, "and ends after iteration end (default 12)"),
        new("--device", true, "cpu or cuda (default cpu)"),
        new("--libtorch", true, "folder of libtorch's .so files (default: the bundled CPU build, or python3's PyTorch)"),
        new("--gpu", true, $"GPU preset whose peak gives MFU ({string.Join(", ", GpuPresets.All.Keys)}; default h100-sxm)"),
        new("--nproc-per-node", true, "ranks to run on this node: threads on CPU, one process per GPU on CUDA (default 1)"),
        new("--ranks-on-one-device", false, "run the --nproc-per-node ranks as threads of one process on one device (GPU 0 on CUDA): memory is their sum, timings are not a cluster's"),
        new("--master-port", true, "rendezvous port when launching GPU ranks (default MASTER_PORT or 29500)"),
        new("--out", true, "folder for metrics.csv, summary.json and plots (default runs/<time>)"),
        new("--tensorboard-dir", true, "write TensorBoard event files here, with Megatron's scalar names (default: none)"),
        new("--tensorboard-log-interval", true, "iterations between TensorBoard scalars (default 1)"),
        new("--log-timers-to-tensorboard", false, "add iteration-time, throughput and the per-iteration times"),
        new("--log-memory-to-tensorboard", false, "add the memory used and the allocator's peak"),
        new("--log-validation-ppl-to-tensorboard", false, "add the validation perplexity"),
        new("--log-world-size-to-tensorboard", false, "add the world size"),
        new("--no-log-loss-scale-to-tensorboard", false, "leave the loss scale out (default: written)"),
        new("--disable-log-loss-scale-to-tensorboard", false, "the same, by Megatron's older name"),
        new("--no-check-for-nan-in-loss-and-grad", false, "let a run go on past a NaN or Inf loss or gradient norm (default: it stops there)"),
        new("--deterministic-mode", false, "deterministic kernels only (libtorch's deterministic algorithms): the same losses run after run, somewhat slower; attention runs flash's deterministic backward, as libtorch has no deterministic cuDNN attention (Megatron with Transformer Engine keeps cuDNN's)"),
        new("--overwrite", false, "let a new run replace the metrics.csv in --out and save beside the checkpoints in --save"),
    };

    private static readonly string[] DecayStyles = ["constant", "linear", "cosine", "inverse-square-root"];

    /// <summary>The settings the flags give; problems of reading go to <see cref="CommandLine.Errors"/>, those of range come
    /// from <see cref="RunSettings.Validate"/>, which the executor applies.</summary>
    public static RunSettings Read(CommandLine cl)
    {
        var d = new RunSettings();
        var dl = d.LearningRateOrDefault;
        var da = d.AdamOrDefault;
        string? style = cl.String("--lr-decay-style");
        if (style is not null && !DecayStyles.Contains(style))
            cl.Errors.Add(style.Equals("WSD", StringComparison.OrdinalIgnoreCase)
                ? "--lr-decay-style WSD (warmup-stable-decay) is not run yet; use constant, linear, cosine or inverse-square-root."
                : $"--lr-decay-style '{style}' is not one of {string.Join(", ", DecayStyles)}.");
        var schedule = new LearningRateSettings(
            cl.Double("--lr") ?? dl.Lr, cl.Double("--min-lr") ?? dl.MinLr,
            style switch
            {
                "constant" => LearningRateDecayStyle.Constant,
                "cosine" => LearningRateDecayStyle.Cosine,
                "inverse-square-root" => LearningRateDecayStyle.InverseSquareRoot,
                "linear" => LearningRateDecayStyle.Linear,
                _ => dl.DecayStyle,
            },
            cl.Int("--lr-warmup-iters") ?? dl.WarmupIters, cl.Double("--lr-warmup-fraction") ?? dl.WarmupFraction,
            cl.Int("--lr-decay-iters") ?? dl.DecayIters);
        var adam = new AdamSettings(cl.Double("--adam-beta1") ?? da.Beta1, cl.Double("--adam-beta2") ?? da.Beta2,
            cl.Double("--adam-eps") ?? da.Epsilon, cl.Double("--weight-decay") ?? da.WeightDecay, cl.Double("--clip-grad") ?? da.ClipGrad);
        var ds = d.LossScaleOrDefault;
        var lossScale = new LossScaleSettings(cl.Double("--loss-scale") ?? ds.Constant, cl.Double("--initial-loss-scale") ?? ds.Initial,
            cl.Double("--min-loss-scale") ?? ds.Min, cl.Int("--loss-scale-window") ?? ds.Window, cl.Int("--hysteresis") ?? ds.Hysteresis);
        var device = cl.Choice("--device", "cpu", "cuda") == "cuda" ? ExecutionDevice.Cuda : d.Device;
        string gpu = cl.String("--gpu") ?? d.Gpu;
        var settings = d with
        {
            TrainIters = cl.Int("--train-iters") ?? d.TrainIters,
            Seed = cl.Int("--seed") ?? d.Seed,
            LearningRate = schedule,
            Adam = adam,
            LossScale = lossScale,
            DataPath = ReadBlend(cl, "--data-path") ?? d.DataPath,
            TrainDataPath = ReadBlend(cl, "--train-data-path") ?? d.TrainDataPath,
            ValidDataPath = ReadBlend(cl, "--valid-data-path") ?? d.ValidDataPath,
            TestDataPath = ReadBlend(cl, "--test-data-path") ?? d.TestDataPath,
            MockData = cl.Switch("--mock-data") || d.MockData,
            Split = ReadSplit(cl),
            EvalInterval = cl.Int("--eval-interval") ?? d.EvalInterval,
            EvalIters = cl.Int("--eval-iters") ?? d.EvalIters,
            Save = cl.String("--save") ?? d.Save,
            Load = cl.String("--load") ?? d.Load,
            LoadFormat = cl.Choice("--load-format", "harness", "hf") == "hf" ? LoadFormat.Hf : d.LoadFormat,
            SaveInterval = cl.Int("--save-interval") ?? d.SaveInterval,
            LogInterval = cl.Int("--log-interval") ?? d.LogInterval,
            Out = cl.String("--out") ?? d.Out,
            Profile = ReadProfile(cl),
            MakeVocabSizeDivisibleBy = cl.Int("--make-vocab-size-divisible-by") ?? d.MakeVocabSizeDivisibleBy,
            Device = device,
            Libtorch = cl.String("--libtorch") ?? d.Libtorch,
            Gpu = gpu,
            NprocPerNode = cl.Int("--nproc-per-node") ?? d.NprocPerNode,
            MasterPort = cl.Int("--master-port") ?? d.MasterPort,
            RanksOnOneDevice = cl.Switch("--ranks-on-one-device") || d.RanksOnOneDevice,
            ExitInterval = cl.Int("--exit-interval") ?? d.ExitInterval,
            ExitDurationInMins = cl.Int("--exit-duration-in-mins") ?? d.ExitDurationInMins,
            Overwrite = cl.Switch("--overwrite") || d.Overwrite,
            CheckForNanInLossAndGrad = !cl.Switch("--no-check-for-nan-in-loss-and-grad") && d.CheckForNanInLossAndGrad,
            DeterministicMode = cl.Switch("--deterministic-mode") || d.DeterministicMode,
            TensorBoard = ReadTensorBoard(cl),
        };
        return settings;
    }

    private static TensorBoardSettings ReadTensorBoard(CommandLine cl)
    {
        var d = new TensorBoardSettings();
        return new TensorBoardSettings(cl.String("--tensorboard-dir") ?? d.Dir, cl.Int("--tensorboard-log-interval") ?? d.LogInterval,
            cl.Switch("--log-timers-to-tensorboard") || d.LogTimers, cl.Switch("--log-memory-to-tensorboard") || d.LogMemory,
            cl.Switch("--log-validation-ppl-to-tensorboard") || d.LogValidationPpl,
            d.LogLossScale && !cl.Switch("--no-log-loss-scale-to-tensorboard") && !cl.Switch("--disable-log-loss-scale-to-tensorboard"),
            cl.Switch("--log-world-size-to-tensorboard") || d.LogWorldSize);
    }

    /// <summary>A data-path flag's list (its words, as nargs='*' takes them), or null when absent or not a blend (with an error).</summary>
    private static DataBlend? ReadBlend(CommandLine cl, string flag)
    {
        if (cl.String(flag) is not string text) return null;
        var (blend, problem) = DataBlend.Parse(flag, text.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        if (problem is not null) cl.Errors.Add(problem);
        return blend;
    }

    private static DataSplit? ReadSplit(CommandLine cl)
    {
        if (cl.String("--split") is not string text) return null;
        var split = DataSplit.Parse(text);
        if (split is null) cl.Errors.Add($"--split '{text}' is not up to three weights (e.g. 969,30,1 or 98/2/0).");
        return split;
    }

    /// <summary>Megatron's --profile with its step range; the step flags alone are an error, as they would do nothing.</summary>
    private static ProfileRange? ReadProfile(CommandLine cl)
    {
        long? start = cl.Int("--profile-step-start"), end = cl.Int("--profile-step-end");
        if (!cl.Switch("--profile"))
        {
            if (start is not null || end is not null) cl.Errors.Add("--profile-step-start/--profile-step-end need --profile.");
            return null;
        }
        var d = new ProfileRange();
        return new ProfileRange(start ?? d.StepStart, end ?? d.StepEnd);
    }

    private static string F(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>The flags that give <paramref name="s"/> back: every field that differs from the default.</summary>
    public static IReadOnlyList<string> Format(RunSettings s)
    {
        var d = new RunSettings();
        var a = new List<string>();
        void Value(string flag, string value) { a.Add(flag); a.Add(value); }
        void Long(string flag, long value, long byDefault) { if (value != byDefault) Value(flag, value.ToString(CultureInfo.InvariantCulture)); }
        void Double(string flag, double value, double byDefault) { if (value != byDefault) Value(flag, F(value)); }
        void Text(string flag, string? value, string? byDefault) { if (value is not null && value != byDefault) Value(flag, value); }
        Long("--train-iters", s.TrainIters, d.TrainIters);
        Long("--seed", s.Seed, d.Seed);
        var l = s.LearningRateOrDefault;
        var dl = d.LearningRateOrDefault;
        Double("--lr", l.Lr, dl.Lr);
        Double("--min-lr", l.MinLr, dl.MinLr);
        if (l.DecayStyle != dl.DecayStyle) Value("--lr-decay-style", DecayStyles[(int)l.DecayStyle]);
        Long("--lr-warmup-iters", l.WarmupIters, dl.WarmupIters);
        if (l.WarmupFraction is double fraction) Value("--lr-warmup-fraction", F(fraction));
        if (l.DecayIters is long decay) Value("--lr-decay-iters", decay.ToString(CultureInfo.InvariantCulture));
        var o = s.AdamOrDefault;
        var da = d.AdamOrDefault;
        Double("--adam-beta1", o.Beta1, da.Beta1);
        Double("--adam-beta2", o.Beta2, da.Beta2);
        Double("--adam-eps", o.Epsilon, da.Epsilon);
        Double("--weight-decay", o.WeightDecay, da.WeightDecay);
        Double("--clip-grad", o.ClipGrad, da.ClipGrad);
        var ls = s.LossScaleOrDefault;
        var dls = d.LossScaleOrDefault;
        if (ls.Constant is double constant) Value("--loss-scale", F(constant));
        Double("--initial-loss-scale", ls.Initial, dls.Initial);
        Double("--min-loss-scale", ls.Min, dls.Min);
        Long("--loss-scale-window", ls.Window, dls.Window);
        Long("--hysteresis", ls.Hysteresis, dls.Hysteresis);
        void Blend(string flag, DataBlend? blend) { if (blend is not null) { a.Add(flag); a.AddRange(blend.Words()); } }
        Blend("--data-path", s.DataPath);
        Blend("--train-data-path", s.TrainDataPath);
        Blend("--valid-data-path", s.ValidDataPath);
        Blend("--test-data-path", s.TestDataPath);
        if (s.MockData) a.Add("--mock-data");
        if (s.Split is { } split) Value("--split", split.ToString());
        Long("--eval-interval", s.EvalInterval, d.EvalInterval);
        Long("--eval-iters", s.EvalIters, d.EvalIters);
        Text("--save", s.Save, d.Save);
        Text("--load", s.Load, d.Load);
        if (s.LoadFormat != d.LoadFormat) Value("--load-format", s.LoadFormat.ToString().ToLowerInvariant());
        Long("--save-interval", s.SaveInterval, d.SaveInterval);
        Long("--log-interval", s.LogInterval, d.LogInterval);
        Text("--out", s.Out, d.Out);
        if (s.Profile is { } p)
        {
            a.Add("--profile");
            Value("--profile-step-start", p.StepStart.ToString(CultureInfo.InvariantCulture));
            Value("--profile-step-end", p.StepEnd.ToString(CultureInfo.InvariantCulture));
        }
        Long("--make-vocab-size-divisible-by", s.MakeVocabSizeDivisibleBy, d.MakeVocabSizeDivisibleBy);
        if (s.Device != d.Device) Value("--device", s.Device.ToString().ToLowerInvariant());
        Text("--libtorch", s.Libtorch, d.Libtorch);
        Text("--gpu", s.Gpu, d.Gpu);
        Long("--nproc-per-node", s.NprocPerNode, d.NprocPerNode);
        if (s.MasterPort is int port) Value("--master-port", port.ToString(CultureInfo.InvariantCulture));
        if (s.RanksOnOneDevice) a.Add("--ranks-on-one-device");
        if (s.ExitInterval is long exit) Value("--exit-interval", exit.ToString(CultureInfo.InvariantCulture));
        if (s.ExitDurationInMins is int minutes) Value("--exit-duration-in-mins", minutes.ToString(CultureInfo.InvariantCulture));
        if (s.Overwrite) a.Add("--overwrite");
        if (!s.CheckForNanInLossAndGrad) a.Add("--no-check-for-nan-in-loss-and-grad");
        if (s.DeterministicMode) a.Add("--deterministic-mode");
        var t = s.TensorBoardOrDefault;
        var dt = d.TensorBoardOrDefault;
        Text("--tensorboard-dir", t.Dir, dt.Dir);
        Long("--tensorboard-log-interval", t.LogInterval, dt.LogInterval);
        if (t.LogTimers) a.Add("--log-timers-to-tensorboard");
        if (t.LogMemory) a.Add("--log-memory-to-tensorboard");
        if (t.LogValidationPpl) a.Add("--log-validation-ppl-to-tensorboard");
        if (!t.LogLossScale) a.Add("--no-log-loss-scale-to-tensorboard");
        if (t.LogWorldSize) a.Add("--log-world-size-to-tensorboard");
        return a;
    }
}
