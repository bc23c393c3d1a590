using Harness.Megatron;
using System.Globalization;
using Harness.Cli.Arguments;
using Harness.Cli.Output;
using Harness.Executor.Calibration;
using Harness.Executor.Native;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness calibrate`: measures, on this machine's GPU, the kernel rates the simulator's efficiency constants stand for
/// (GEMMs at the layer shapes of the models the reproductions and the executor run, causal attention through each backend's
/// kernel the GPU has (FlashAttention-2, cuDNN's fused attention, the unfused math kernel), a streaming element-wise kernel),
/// on a GPU first held at load, prints each measurement beside what the preset's constants
/// predict, and writes the preset with the measured constants as a cluster file for `simulate --cluster`,
/// `search --cluster` and `validate --cluster`.
/// </summary>
public static class CalibrateCommand
{
    private static readonly Flag[] Flags =
    {
        new("--gpu", true, $"the GPU preset the measurement calibrates (default: from the device's name; {string.Join(", ", GpuPresets.All.Keys)})"),
        new("--model", true, "measure this model's layer GEMMs and attention (a preset or a JSON file; default: the reproduced models' layers)"),
        new("--seq-length", true, "with --model: sequence length (default: the model's)"),
        new("--micro-batch-size", true, "with --model: micro-batch size (default 1)"),
        new("--tensor-model-parallel-size", true, "with --model: tensor-parallel size the shapes are split by (default 1)"),
        new("--hold-seconds", true, "seconds of back-to-back GEMMs before measuring, so clocks settle under power load (default 10)"),
        new("--out", true, "write the calibrated GPU as a cluster JSON file (one node) here"),
        new("--libtorch", true, "folder of libtorch's .so files (default: python3's PyTorch)"),
        new("--help", false, "this help"),
    };

    /// <summary>The default layers: those of the reproduced tables' Llama and GPT layouts (attention head dim 128).</summary>
    private static readonly (string Label, string Model, int SeqLength, RunDescription Config)[] ReproducedLayers =
    {
        ("llama-7b s4096", "llama-7b", 4096, new RunDescription(GlobalBatch: 1)),
        ("llama-65b s4096 t2", "llama-65b", 4096, new RunDescription(TensorParallel: 2, SequenceParallel: true, GlobalBatch: 1)),
        ("llama-175b s8192 t4", "llama-175b", 8192, new RunDescription(TensorParallel: 4, SequenceParallel: true, GlobalBatch: 1)),
        ("gpt-18.4b b8 t8", "gpt-18.4b", 2048, new RunDescription(TensorParallel: 8, MicroBatch: 8, GlobalBatch: 8)),
    };

    public static int Run(string[] args)
    {
        if (CommandLine.ParseOrHelp(args, Flags, "usage: harness calibrate [options]") is not { } cl) return 0;
        double hold = cl.Double("--hold-seconds") ?? 10;
        if (hold is < 0 or > 600) cl.Errors.Add($"--hold-seconds {hold} is out of range; give 0 to 600 seconds.");
        if (cl.Ignored.Count > 0) cl.Errors.Add($"options it does not take: {string.Join(' ', cl.Ignored)}; see harness calibrate --help.");
        GpuSpec? named = null;
        if (cl.String("--gpu") is string name && !GpuPresets.All.TryGetValue(name, out named))
            cl.Errors.Add($"--gpu '{name}' is not a preset; valid: {string.Join(", ", GpuPresets.All.Keys)}.");
        var layers = Layers(cl);
        // Checked before the minutes of measuring, whose result would otherwise be lost.
        if (cl.String("--out") is string outPath && OutputFolder.Writable(outPath, "--out") is string outError) cl.Errors.Add(outError);
        if (cl.Errors.Count > 0) return Fail(cl.Errors);
        try { Console.WriteLine(TorchRuntime.Initialize(ExecutionDevice.Cuda, cl.String("--libtorch"))); }
        catch (NativeLoadException e) { return Fail([e.Message]); }

        string deviceName = Nvml.DeviceName(0) ?? "CUDA device 0";
        var preset = named ?? PresetFor(deviceName);
        if (preset is null)
            return Fail([$"cannot tell which preset '{deviceName}' is; pass --gpu ({string.Join(", ", GpuPresets.All.Keys)})."]);
        var device = new Device(TorchSharp.DeviceType.CUDA, 0);
        Console.WriteLine($"calibrating {preset.Name} on {deviceName}: holding at load for {hold:0.#} s");
        var (cold, held) = KernelRates.HoldAtLoad(device, hold);
        Console.WriteLine(Invariant($"8192^3 bf16 GEMM: {cold / 1e12:F0} TFLOP/s cold, {held / 1e12:F0} after the hold ({held / preset.PeakBf16Flops:P1} of peak)"));

        var shapes = new List<(string, GemmShape)>();
        var gemmShapes = new GemmShape[ComputeTime.LayerGemmCount];
        foreach (var (label, model, config) in layers)
        {
            ComputeTime.LayerGemms(model, config, gemmShapes);
            shapes.AddRange(gemmShapes.Select(g => (label, g)));
        }
        var gemms = KernelRates.Gemms(device, shapes);
        List<AttentionRate> attention;
        // Choosing an attention kernel sets libtorch's at::Context switches, whose exports an unusual libtorch may lack.
        try
        {
            attention = layers.Select(l => AttentionShape.Of(l.Model, l.Config)).Distinct()
                .SelectMany(a => MeasuredBackends.Select(b => KernelRates.Attention(device, a, b))).OfType<AttentionRate>().ToList();
        }
        catch (NativeLoadException e) { return Fail([e.Message]); }
        var memory = KernelRates.ElementwiseAdd(device, 1L << 29);
        var (toDevice, toHost) = KernelRates.HostLink(device, 1L << 30);
        var calibration = new GpuCalibration(preset, deviceName, cold, held, gemms, attention, memory, toDevice, toHost);
        Report(calibration);

        if (cl.String("--out") is string path)
        {
            var gpu = calibration.Calibrated;
            File.WriteAllText(path, SpecJson.Write(new ClusterSpec(gpu, gpu.GpusPerNode, gpu.GpusPerNode)) + "\n");
            Console.WriteLine($"wrote {path}: use it as --cluster {path} with harness simulate, search and validate (--gpus sets the world size)");
        }
        return 0;
    }

    private static void Report(GpuCalibration c)
    {
        var e = c.Preset.Efficiency;
        Console.WriteLine(Invariant($"GEMMs (bf16; implied = the efficiency constant that gives this time under the shape curve, preset {e.Gemm:F2}):"));
        foreach (var r in c.Gemms)
            Console.WriteLine(Invariant($"  {r.Layer,-20} {r.Pass,-16} {r.Shape.M,6:F0} x {r.Shape.K,6:F0} x {r.Shape.N,6:F0}  {r.Seconds * 1e3,8:F3} ms  {r.FlopsPerSecond / 1e12,5:F0} TFLOP/s  implied {c.GemmEfficiency(r):F3}"));
        foreach (var backend in MeasuredBackends)
        {
            var rates = c.Attention.Where(a => a.Backend == backend).ToList();
            string preset = backend switch
            {
                AttentionBackend.Flash => Invariant($"preset {e.Attention:F2}"),
                AttentionBackend.Fused => e.FusedAttention is double f ? Invariant($"preset {f:F2}") : "no preset",
                _ => "no constant of its own: GEMM and HBM rates",
            };
            Console.WriteLine($"causal attention, --attention-backend {AttentionKernels.Name(backend)} (forward + backward counted as 3.5 x the causal forward; {preset}):"
                + (rates.Count == 0 ? " no such kernel on this GPU for these inputs" : ""));
            foreach (var a in rates)
                Console.WriteLine(Invariant($"  b {a.Shape.Batch} x {a.Shape.Heads} heads ({a.Shape.Groups} kv) x {a.Shape.HeadDim} s {a.Shape.SeqLength}: forward {a.ForwardSeconds * 1e3:F3} ms ({a.CausalForwardFlops / a.ForwardSeconds / 1e12:F0} TFLOP/s), backward {a.BackwardSeconds * 1e3:F3} ms")
                    + (backend == AttentionBackend.Unfused ? "" : Invariant($"  implied {c.AttentionEfficiency(a):F3}")));
        }
        Console.WriteLine(Invariant($"{c.Memory.Kernel}: {c.Memory.BytesPerSecond / 1e9:F0} GB/s of {c.Preset.HbmBandwidthBytesPerSecond / 1e9:F0} (preset {e.Hbm:F2})"));
        foreach (var link in new[] { c.HostToDevice, c.DeviceToHost }.OfType<MemoryRate>())
            Console.WriteLine(Invariant($"{link.Kernel}: {link.BytesPerSecond / 1e9:F1} GB/s (preset host link {c.Preset.HostLinkBytesPerSecond / 1e9:F0} GB/s)"));
        var m = c.Measured;
        Console.WriteLine(Invariant($"measured efficiency: gemm {m.Gemm:F3}, attention (flash) {m.Attention:F3}, fused attention {Fraction(m.FusedAttention)}, hbm {m.Hbm:F3}, host link {c.HostLinkBytesPerSecond / 1e9:F1} GB/s   (preset {c.Preset.Name}: {e.Gemm:F2}, {e.Attention:F2}, {Fraction(e.FusedAttention)}, {e.Hbm:F2}, {c.Preset.HostLinkBytesPerSecond / 1e9:F0} GB/s); a backend not measured keeps the preset's"));
    }

    /// <summary>The attention backends timed: the two with a constant of their own and the unfused math kernel.</summary>
    private static readonly AttentionBackend[] MeasuredBackends = [AttentionBackend.Flash, AttentionBackend.Fused, AttentionBackend.Unfused];

    private static string Fraction(double? e) => e is double v ? v.ToString("F3", CultureInfo.InvariantCulture) : "none";

    /// <summary>The layers to measure: the one --model names, else <see cref="ReproducedLayers"/>.</summary>
    private static List<(string Label, ModelSpec Model, RunDescription Config)> Layers(CommandLine cl)
    {
        if (cl.String("--model") is not string name)
        {
            foreach (var flag in new[] { "--seq-length", "--micro-batch-size", "--tensor-model-parallel-size" })
                if (cl.String(flag) is not null) cl.Errors.Add($"{flag} shapes the --model layer; pass --model too.");
            return ReproducedLayers.Select(l => (l.Label, ModelPresets.All[l.Model] with { SeqLength = l.SeqLength }, l.Config)).ToList();
        }
        ModelSpec? model = null;
        if (ModelPresets.All.TryGetValue(name, out var preset)) model = preset;
        else if (File.Exists(name))
        {
            try { model = SpecJson.ReadModel(name); }
            catch (SpecFileException e) { cl.Errors.Add(e.Message); }
        }
        else cl.Errors.Add($"--model '{name}' is neither a preset ({string.Join(", ", ModelPresets.All.Keys)}) nor a file.");
        int b = cl.Int("--micro-batch-size") ?? 1, t = cl.Int("--tensor-model-parallel-size") ?? 1, s = cl.Int("--seq-length") ?? model?.SeqLength ?? 1;
        if (b < 1) cl.Errors.Add($"--micro-batch-size {b} must be at least 1.");
        if (s < 1) cl.Errors.Add($"--seq-length {s} must be at least 1.");
        if (model is not null && (t < 1 || model.NumAttentionHeads % t != 0 || model.NumQueryGroups % t != 0 || model.FfnHiddenSize % t != 0))
            cl.Errors.Add($"--tensor-model-parallel-size {t} must divide the heads ({model.NumAttentionHeads}), key/value groups ({model.NumQueryGroups}) and FFN size ({model.FfnHiddenSize}).");
        if (model is null || cl.Errors.Count > 0) return [];
        var config = new RunDescription(TensorParallel: t, SequenceParallel: t > 1, MicroBatch: b, GlobalBatch: b);
        return [($"{name} s{s} b{b}" + (t > 1 ? $" t{t}" : ""), model with { SeqLength = s }, config)];
    }

    /// <summary>The preset whose GPU the device name (NVML's, e.g. "NVIDIA H200") names.</summary>
    private static GpuSpec? PresetFor(string deviceName)
    {
        (string Marker, string Preset)[] names = { ("H200", "h200"), ("H800", "h800"), ("H100", "h100-sxm"), ("A800", "a800-80gb"), ("A100", "a100-80gb"), ("V100", "v100-32gb") };
        foreach (var (marker, preset) in names)
            if (deviceName.Contains(marker, StringComparison.OrdinalIgnoreCase)) return GpuPresets.All[preset];
        return null;
    }

    private static int Fail(IEnumerable<string> errors)
    {
        foreach (var e in errors) Console.Error.WriteLine($"harness calibrate: {e}");
        return 2;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
