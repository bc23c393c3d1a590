using System.Globalization;
using Harness.Cli.Arguments;
using Harness.Cli.Output;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.Training.Records;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness run`: real training on one device. Parses Megatron-style flags into <see cref="TrainingOptions"/>, runs the
/// <see cref="Trainer"/>, prints progress, and writes metrics.csv (row by row), summary.json and PNG plots to --out.
/// With no arguments it trains the tiny default model on the shipped corpus on CPU.
/// </summary>
public static class RunCommand
{
    /// <summary>Megatron's --hidden-dropout and --attention-dropout default, for models whose spec has dropout (GPT).</summary>
    private const double DefaultDropout = 0.1;

    private static readonly Flag[] OwnFlags =
    {
        new("--micro-batch-size", true, "samples per micro-batch (default 4 for the tiny model, else 1)"),
        new("--global-batch-size", true, "samples per iteration; a multiple of the micro-batch (default: the micro-batch)"),
        new("--train-iters", true, "iterations (default 150)"),
        new("--lr", true, "peak learning rate"), new("--min-lr", true, "final learning rate"),
        new("--lr-warmup-iters", true, "linear warm-up iterations"), new("--lr-decay-iters", true, "cosine decay length (default --train-iters)"),
        new("--weight-decay", true, "AdamW decay (default 0.01)"), new("--clip-grad", true, "gradient norm limit (default 1.0; 0 = off)"),
        new("--adam-beta1", true, "default 0.9"), new("--adam-beta2", true, "default 0.999"), new("--adam-eps", true, "default 1e-8"),
        new("--recompute-granularity", true, "full or selective (default: none)"),
        new("--bf16", false, "bf16 weights and activations, fp32 master weights and gradients (GPU)"),
        new("--device", true, "cpu or cuda (default cpu)"),
        new("--libtorch", true, "folder of libtorch's .so files (default: the bundled CPU build, or python3's PyTorch)"),
        new("--gpu", true, $"GPU preset whose peak gives MFU ({string.Join(", ", GpuPresets.All.Keys)}; default h100-sxm)"),
        new("--data-path", true, "prefix of a Megatron .bin/.idx dataset (default: the shipped corpus)"),
        new("--mock-data", false, "synthetic tokens instead of a dataset"),
        new("--save", true, "checkpoint folder"), new("--load", true, "resume from this checkpoint folder"),
        new("--save-interval", true, "iterations between checkpoints (default: only at the end)"),
        new("--seed", true, "random seed (default 1234)"),
        new("--out", true, "folder for metrics.csv, summary.json and plots (default runs/<time>)"),
        new("--log-interval", true, "print progress every N iterations (default 1)"),
        new("--no-fused-kernels", false, "on a GPU, libtorch's operators instead of the harness's fused SwiGLU, cross-entropy and AdamW kernels"),
        new("--no-gradient-accumulation-fusion", false, "fold bf16 weight gradients after each micro-batch instead of accumulating them in the GEMM (GPU)"),
        new("--make-vocab-size-divisible-by", true, "pad the embedding and output tables to a multiple of this times t, as Megatron does (default 128)"),
        new("--profile", false, "open a CUDA profiler range (nsys --capture-range=cudaProfilerApi, ncu --profile-from-start off)"),
        new("--profile-step-start", true, "the range starts before iteration start + 1 (default 10)"),
        new("--profile-step-end", true, "and ends after iteration end (default 12)"),
        new("--help", false, "this help"),
    };

    public static int Run(string[] args)
    {
        var flags = ModelArguments.Flags.Concat(OwnFlags).Concat(DistributedRun.Flags).ToArray();
        var cl = CommandLine.Parse(args, flags);
        if (cl.Switch("--help"))
        {
            Console.WriteLine("usage: harness run [Megatron-LM model flags] [options]   (no options: a tiny model on the shipped corpus, on CPU)");
            Flag.PrintHelp(flags, 44);
            return 0;
        }
        var options = Build(cl);
        if (options is not null) cl.Errors.AddRange(options.Validate());
        if (cl.Ignored.Count > 0) cl.Errors.Add($"unknown options: {string.Join(' ', cl.Ignored)}; see harness run --help.");
        bool distributed = DistributedRun.Requested(cl);
        if (distributed && options?.Profile is not null)
            cl.Errors.Add("--profile opens the profiler range in single-device runs; profile a parallel run's ranks with nsys or ncu from the start instead.");
        string output = cl.String("--out") ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        if (cl.Errors.Count == 0 && options is not null && OutputFolder.Create(output) is string outError) cl.Errors.Add(outError);
        if (cl.Errors.Count > 0 || options is null)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness run: {e}");
            return 2;
        }
        if (distributed) return DistributedRun.Run(cl, args, options, output, Math.Max(1, cl.Int("--log-interval") ?? 1));
        return Train(options, output, Math.Max(1, cl.Int("--log-interval") ?? 1));
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
        var records = new List<IterationRecord>();
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        var m = options.Model;
        Console.WriteLine($"harness run: {m.Name} ({trainer.ParameterCount:N0} parameters) on {trainer.DeviceName}, {(options.Bf16 ? "bf16" : "fp32")}, " +
                          $"global batch {options.GlobalBatchSize} x s {m.SeqLength}; {trainer.Runtime}");
        foreach (var note in trainer.FusionNotes) Console.WriteLine($"harness run: note: {note}");
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
        catch (Exception e) when (OutOfMemory.Is(e))
        {
            Console.Error.WriteLine($"harness run: micro-batch {options.MicroBatchSize} x s {m.SeqLength} of {m.Name} does not fit in the device's memory; " +
                                    "use a smaller --micro-batch-size or --recompute-granularity full.");
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

    private static TrainingOptions? Build(CommandLine cl)
    {
        bool tiny = !cl.HasAny(ModelArguments.Flags);
        var model = tiny ? DefaultRun.Model : ModelArguments.Read(cl);
        if (model is null) return null;
        var device = cl.Choice("--device", "cpu", "cuda") == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu;
        var recompute = cl.Choice("--recompute-granularity", "full", "selective") switch
        {
            "full" => RecomputeGranularity.Full,
            "selective" => RecomputeGranularity.Selective,
            _ => RecomputeGranularity.None,
        };
        string gpuName = cl.String("--gpu") ?? "h100-sxm";
        if (!GpuPresets.All.TryGetValue(gpuName, out var gpu))
            cl.Errors.Add($"--gpu '{gpuName}' is not a preset; valid: {string.Join(", ", GpuPresets.All.Keys)}.");
        int micro = cl.Int("--micro-batch-size") ?? (tiny ? DefaultRun.MicroBatchSize : 1);
        long iters = cl.Int("--train-iters") ?? DefaultRun.TrainIters;
        double lr = cl.Double("--lr") ?? (tiny ? DefaultRun.Lr : 1e-4);
        var schedule = new LearningRateSchedule(lr, cl.Double("--min-lr") ?? (tiny ? DefaultRun.MinLr : lr / 10),
            cl.Int("--lr-warmup-iters") ?? (tiny ? DefaultRun.WarmupIters : 0), cl.Int("--lr-decay-iters") ?? iters);
        var d = new AdamWOptions();
        var adam = new AdamWOptions(cl.Double("--adam-beta1") ?? d.Beta1, cl.Double("--adam-beta2") ?? d.Beta2,
            cl.Double("--adam-eps") ?? d.Epsilon, cl.Double("--weight-decay") ?? d.WeightDecay, cl.Double("--clip-grad") ?? d.ClipGrad);
        bool mock = cl.Switch("--mock-data");
        string? data = cl.String("--data-path") ?? (mock ? null : DefaultRun.DataPath);
        if (cl.Errors.Count > 0) return null;
        return new TrainingOptions(model, device, cl.Switch("--bf16"), micro, cl.Int("--global-batch-size") ?? micro, iters, schedule, adam,
            cl.Int("--seed") ?? 1234, recompute, data, mock, cl.String("--save"), cl.String("--load"),
            cl.Int("--save-interval") ?? 0, device == ExecutionDevice.Cuda ? gpu : null, cl.String("--libtorch"), Profile(cl),
            !cl.Switch("--no-fused-kernels"), !cl.Switch("--no-gradient-accumulation-fusion"),
            cl.Int("--make-vocab-size-divisible-by") ?? VocabPadding.MegatronDefault,
            cl.Double("--hidden-dropout") ?? (model.Dropout ? DefaultDropout : 0), cl.Double("--attention-dropout") ?? (model.Dropout ? DefaultDropout : 0));
    }

    /// <summary>Megatron's --profile with its step range; the step flags alone are an error, as they would do nothing.</summary>
    private static ProfileRange? Profile(CommandLine cl)
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
}
