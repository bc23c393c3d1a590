using System.Globalization;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.Records;
using Harness.Executor.Training;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness run`: real training on one device. Parses Megatron-style flags into <see cref="TrainingOptions"/>, runs the
/// <see cref="Trainer"/>, prints progress, and writes metrics.csv (row by row), summary.json and PNG plots to --out.
/// With no arguments it trains the tiny default model on the shipped corpus on CPU.
/// </summary>
public static class RunCommand
{
    private static readonly (string Flag, bool Value, string Help)[] Flags =
    {
        ("--model", true, $"model preset ({string.Join(", ", ModelPresets.All.Keys)}); default: a tiny GPT-2-style model"),
        ("--num-layers", true, "override the model's layers"), ("--hidden-size", true, "override h"),
        ("--ffn-hidden-size", true, "override the MLP size"), ("--num-attention-heads", true, "override the heads"),
        ("--num-query-groups", true, "override the key/value groups"), ("--seq-length", true, "override s"),
        ("--vocab-size", true, "override V"),
        ("--micro-batch-size", true, "samples per micro-batch (default 8 for the tiny model, else 1)"),
        ("--global-batch-size", true, "samples per iteration; a multiple of the micro-batch (default: the micro-batch)"),
        ("--train-iters", true, "iterations (default 150)"), ("--lr", true, "peak learning rate"), ("--min-lr", true, "final learning rate"),
        ("--lr-warmup-iters", true, "linear warm-up iterations"), ("--lr-decay-iters", true, "cosine decay length (default --train-iters)"),
        ("--weight-decay", true, "AdamW decay (default 0.01)"), ("--clip-grad", true, "gradient norm limit (default 1.0; 0 = off)"),
        ("--adam-beta1", true, "default 0.9"), ("--adam-beta2", true, "default 0.999"), ("--adam-eps", true, "default 1e-8"),
        ("--recompute-granularity", true, "full or selective (default: none)"),
        ("--bf16", false, "bf16 weights and activations, fp32 master weights and gradients (GPU)"),
        ("--device", true, "cpu or cuda (default cpu)"), ("--libtorch", true, "folder of libtorch's .so files (default: the bundled CPU build, or python3's PyTorch)"),
        ("--gpu", true, $"GPU preset whose peak gives MFU ({string.Join(", ", GpuPresets.All.Keys)}; default h100-sxm)"),
        ("--data-path", true, "prefix of a Megatron .bin/.idx dataset (default: the shipped corpus)"),
        ("--mock-data", false, "synthetic tokens instead of a dataset"),
        ("--save", true, "checkpoint folder"), ("--load", true, "resume from this checkpoint folder"),
        ("--save-interval", true, "iterations between checkpoints (default: only at the end)"),
        ("--seed", true, "random seed (default 1234)"), ("--out", true, "folder for metrics.csv, summary.json and plots (default runs/<time>)"),
        ("--log-interval", true, "print progress every N iterations (default 1)"),
    };

    public static int Run(string[] args)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine("usage: harness run [options]   (no options: train a tiny model on the shipped corpus on CPU)");
            foreach (var (flag, value, help) in Flags) Console.WriteLine($"  {flag + (value ? " X" : ""),-28} {help}");
            return 0;
        }
        var errors = new List<string>();
        var values = Parse(args, errors);
        var options = errors.Count == 0 ? Build(values, errors) : null;
        if (options is not null) errors.AddRange(options.Validate());
        if (errors.Count > 0 || options is null)
        {
            foreach (var e in errors) Console.Error.WriteLine($"harness run: {e}");
            return 2;
        }
        string output = values.GetValueOrDefault("--out") ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        int logInterval = int.TryParse(values.GetValueOrDefault("--log-interval"), out var li) && li > 0 ? li : 1;
        return Train(options, output, logInterval);
    }

    private static int Train(TrainingOptions options, string output, int logInterval)
    {
        Trainer trainer;
        try { trainer = new Trainer(options); }
        catch (Exception e) when (e is NativeLoadException or FileNotFoundException or InvalidDataException or ArgumentException)
        {
            Console.Error.WriteLine($"harness run: {e.Message}");
            return 2;
        }
        using var _ = trainer;
        Directory.CreateDirectory(output);
        var records = new List<IterationRecord>();
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        var m = options.Model;
        Console.WriteLine($"harness run: {m.Name} ({trainer.ParameterCount:N0} parameters) on {trainer.DeviceName}, {(options.Bf16 ? "bf16" : "fp32")}, " +
                          $"global batch {options.GlobalBatchSize} x s {m.SeqLength}; {trainer.Runtime}");
        try
        {
            using var csv = new MetricsCsv(Path.Combine(output, "metrics.csv"), append: options.Load is not null);
            trainer.Run(r =>
            {
                csv.Append(r);
                records.Add(r);
                if (r.Iteration % logInterval == 0 || r.Iteration == options.TrainIters) Console.WriteLine(Progress(r, options.TrainIters));
            }, cancel.Token);
        }
        catch (InvalidDataException e)
        {
            Console.Error.WriteLine($"harness run: {e.Message} (the {records.Count} iterations done are in {output}/metrics.csv)");
            return 2;
        }
        finally
        {
            if (records.Count > 0)
            {
                RunSummary.From(trainer, records).Write(Path.Combine(output, "summary.json"));
                Plots.Write(output, records, $"{m.Name} on {trainer.DeviceName}");
            }
        }
        Console.WriteLine($"harness run: wrote {output}/metrics.csv, summary.json, loss.png, throughput.png" + (options.Save is null ? "" : $"; checkpoint in {options.Save}"));
        return 0;
    }

    private static string Progress(IterationRecord r, long iterations)
    {
        var c = CultureInfo.InvariantCulture;
        string line = string.Create(c, $"iter {r.Iteration,6}/{iterations} | loss {r.Loss,8:F4} | grad norm {r.GradNorm,7:F3} | lr {r.LearningRate:E2} | {r.ElapsedMs,8:F1} ms | {r.TokensPerSecondPerGpu,10:N0} tok/s");
        return r.Mfu is double mfu ? line + string.Create(c, $" | {r.ModelTflopsPerGpu:F1} TFLOP/s | MFU {100 * mfu:F1}%") : line;
    }

    private static Dictionary<string, string?> Parse(string[] args, List<string> errors)
    {
        var known = Flags.ToDictionary(f => f.Flag, f => f.Value);
        var values = new Dictionary<string, string?>();
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i], name = arg;
            string? value = null;
            int eq = arg.IndexOf('=');
            if (eq > 0) (name, value) = (arg[..eq], arg[(eq + 1)..]);
            if (!known.TryGetValue(name, out bool takesValue)) { errors.Add($"unknown option '{arg}'; see harness run --help."); continue; }
            if (takesValue && value is null)
            {
                if (i + 1 >= args.Length) { errors.Add($"{name} needs a value."); continue; }
                value = args[++i];
            }
            values[name] = value;
        }
        return values;
    }

    private static TrainingOptions? Build(Dictionary<string, string?> v, List<string> errors)
    {
        long? Long(string flag)
        {
            if (v.GetValueOrDefault(flag) is not string s) return null;
            if (long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long x)) return x;
            errors.Add($"{flag} expects an integer, not '{s}'.");
            return null;
        }
        double? Double(string flag)
        {
            if (v.GetValueOrDefault(flag) is not string s) return null;
            if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) && double.IsFinite(x)) return x;
            errors.Add($"{flag} expects a number, not '{s}'.");
            return null;
        }
        int? Int(string flag) => Long(flag) is long l ? (int)Math.Clamp(l, int.MinValue, int.MaxValue) : null;

        var model = DefaultRun.Model;
        bool tiny = true;
        if (v.GetValueOrDefault("--model") is string name)
        {
            if (!ModelPresets.All.TryGetValue(name, out var preset))
            {
                errors.Add($"--model '{name}' is not a preset; valid: {string.Join(", ", ModelPresets.All.Keys)}.");
                return null;
            }
            (model, tiny) = (preset, false);
        }
        if (Int("--num-layers") is int l) model = model with { NumLayers = l };
        if (Int("--hidden-size") is int h) model = model with { HiddenSize = h };
        if (Int("--ffn-hidden-size") is int f) model = model with { FfnHiddenSize = f };
        if (Int("--num-attention-heads") is int a) model = model with { NumAttentionHeads = a, NumQueryGroups = model.IsGroupedQuery ? model.NumQueryGroups : a };
        if (Int("--num-query-groups") is int g) model = model with { NumQueryGroups = g };
        if (Int("--seq-length") is int sl) model = model with { SeqLength = sl };
        if (Int("--vocab-size") is int vs) model = model with { VocabSize = vs };

        var device = ExecutionDevice.Cpu;
        switch (v.GetValueOrDefault("--device"))
        {
            case null or "cpu": break;
            case "cuda": device = ExecutionDevice.Cuda; break;
            case var d: errors.Add($"--device '{d}' is not cpu or cuda."); break;
        }
        var recompute = RecomputeGranularity.None;
        switch (v.GetValueOrDefault("--recompute-granularity"))
        {
            case null: break;
            case "full": recompute = RecomputeGranularity.Full; break;
            case "selective": recompute = RecomputeGranularity.Selective; break;
            case var r: errors.Add($"--recompute-granularity '{r}' is not full or selective."); break;
        }
        GpuSpec? gpu = null;
        string gpuName = v.GetValueOrDefault("--gpu") ?? "h100-sxm";
        if (!GpuPresets.All.TryGetValue(gpuName, out gpu)) errors.Add($"--gpu '{gpuName}' is not a preset; valid: {string.Join(", ", GpuPresets.All.Keys)}.");

        int micro = Int("--micro-batch-size") ?? (tiny ? DefaultRun.MicroBatchSize : 1);
        long iters = Long("--train-iters") ?? DefaultRun.TrainIters;
        double lr = Double("--lr") ?? (tiny ? DefaultRun.Lr : 1e-4);
        var schedule = new LearningRateSchedule(lr, Double("--min-lr") ?? (tiny ? DefaultRun.MinLr : lr / 10),
            Long("--lr-warmup-iters") ?? (tiny ? DefaultRun.WarmupIters : 0), Long("--lr-decay-iters") ?? iters);
        var adamDefaults = new AdamWOptions();
        var adam = new AdamWOptions(Double("--adam-beta1") ?? adamDefaults.Beta1, Double("--adam-beta2") ?? adamDefaults.Beta2,
            Double("--adam-eps") ?? adamDefaults.Epsilon, Double("--weight-decay") ?? adamDefaults.WeightDecay, Double("--clip-grad") ?? adamDefaults.ClipGrad);
        bool mock = v.ContainsKey("--mock-data");
        string? data = v.GetValueOrDefault("--data-path") ?? (mock ? null : DefaultRun.DataPath);
        if (errors.Count > 0) return null;
        return new TrainingOptions(model, device, v.ContainsKey("--bf16"), micro, Int("--global-batch-size") ?? micro, iters, schedule, adam,
            Int("--seed") ?? 1234, recompute, data, mock, v.GetValueOrDefault("--save"), v.GetValueOrDefault("--load"),
            Long("--save-interval") ?? 0, device == ExecutionDevice.Cuda ? gpu : null, v.GetValueOrDefault("--libtorch"));
    }
}
