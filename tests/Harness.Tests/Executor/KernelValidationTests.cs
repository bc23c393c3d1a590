using System.IO.Compression;
using Harness.Cli.Commands;
using Harness.Executor.Training.Records;
using Harness.Reproduce;
using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>harness validate --kernels: a one-GPU run's kernel profile by the kinds the simulator costs apart, beside it.</summary>
[Collection("Console")]
public class KernelValidationTests
{
    private static readonly ModelSpec Gpt2 = ModelPresets.All["gpt2-large"] with { HiddenDropout = 0, AttentionDropout = 0 };
    private static readonly RunDescription TwoMicroBatches = new(MicroBatch: 8, GlobalBatch: 16, Precision: Precision.Bf16, AttentionBackend: AttentionBackend.Fused,
        Implementation: TransformerImpl.Harness);
    private static readonly GpuSpec H100 = GpuPresets.All["h100-sxm"];

    /// <summary>The GEMMs by hand: per micro-batch each layer's QKV (h x 3h), projection (h x h), FC1 (h x 4h) and FC2 (4h x h)
    /// forward, data and weight gradient, and the logits' (h x V) likewise; each 2·m·k·n FLOPs at 0.70 of 989 TFLOP/s times
    /// the shape factor d/(d + 128) of each dimension. With the rest of the kernels and the launch gaps the simulator adds
    /// (20 per layer forward, 40 backward, 4 µs each), they are the compute and optimizer of the step's estimate.</summary>
    [Fact]
    public void TheKernelTimeIsTheEstimatesComputeWithoutItsLaunchGaps()
    {
        var k = KernelTime.Iteration(Gpt2, TwoMicroBatches, H100);
        double T = 8 * 1024, h = 1280, V = Gpt2.VocabSize;
        static double Gemm(double m, double n, double q) => 2 * m * n * q / (989e12 * 0.70 * (m / (m + 128)) * (n / (n + 128)) * (q / (q + 128)));
        double layer = Gemm(T, h, 3 * h) + Gemm(T, h, h) + Gemm(T, h, 4 * h) + Gemm(T, 4 * h, h);
        Assert.Equal(2 * 3 * (36 * layer + Gemm(T, h, V)), k.Gemm, 9);
        var estimate = Estimator.Estimate(Gpt2, new ClusterSpec(H100, 1, 1), TwoMicroBatches);
        double gaps = 2 * 36 * 3 * 20 * 4e-6;
        Assert.Equal(estimate.Time.Compute + estimate.Time.Recompute + estimate.Time.Optimizer, k.Total + gaps, 9);
        Assert.Equal(estimate.Time.Optimizer, k.Optimizer, 12);
        Assert.True(k.Attention > 0 && k.Elementwise > 0);
    }

    /// <summary>Full recomputation repeats each layer's forward: its GEMMs once more, a third on top of the three passes.</summary>
    [Fact]
    public void FullRecomputationAddsEachLayersForwardGemmsOnceMore()
    {
        var plain = KernelTime.Iteration(Gpt2, TwoMicroBatches, H100);
        var full = KernelTime.Iteration(Gpt2, TwoMicroBatches with { Recompute = RecomputeSpec.FullUniform() }, H100);
        double logits = 2 * 3 * ComputeTime.Gemm(8 * 1024, 1280, Gpt2.VocabSize, H100, Precision.Bf16);
        Assert.Equal((plain.Gemm - logits) * 4 / 3, full.Gemm - logits, 9);
        Assert.Throws<ArgumentException>(() => KernelTime.Iteration(Gpt2, TwoMicroBatches with { DataParallel = 2, GlobalBatch = 32 }, H100));
    }

    /// <summary>ncu's raw CSV after its log lines: the header, the units, a row per kernel launch; names with commas quoted.</summary>
    private static string Profile(string unit, params (string Name, string Time)[] kernels)
    {
        string path = Path.Combine(TestTemp.Root, $"kernels-{Guid.NewGuid():N}.csv.gz");
        var lines = new List<string> { "==PROF== Connected to process 1024 (harness)", "\"ID\",\"Kernel Name\",\"Stream\",\"gpu__time_duration.sum\"", $"\"\",\"\",\"\",\"{unit}\"" };
        lines.AddRange(kernels.Select((k, i) => $"\"{i}\",\"{k.Name}\",\"7\",\"{k.Time}\""));
        using (var gz = new GZipStream(File.Create(path), CompressionLevel.Fastest))
        using (var w = new StreamWriter(gz)) w.Write(string.Join('\n', lines) + "\n");
        return path;
    }

    private static string WriteRun(RunDescription description, ProfileRange? profile, ExecutionDevice device = ExecutionDevice.Cuda, string? parent = null)
    {
        string dir = Path.Combine(parent ?? TestTemp.Root, $"harness-kernels-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var settings = new RunSettings(MockData: true, Device: device, Gpu: "h100-sxm", Profile: profile, TrainIters: 6);
        var records = Enumerable.Range(1, 6).Select(i => new IterationRecord(i, 400, 1, 400, 0.4, 10, 1, 1e-4, 60L << 30, 60L << 30, 0.2, 400)).ToList();
        RunSummary.From(new RunRecord(Gpt2, description, settings, [], "NVIDIA H100 80GB HBM3", "test", 1, Gpt2.VocabSize, []), records)
            .Write(Path.Combine(dir, "summary.json"));
        return dir;
    }

    /// <summary>Two profiled iterations: each kernel's time is halved and sorted into its kind by name (cuDNN's attention
    /// kernels though they name sm90, the zeroing of the float32 main gradients with the optimizer), and the table sets each
    /// kind beside the simulator's; what --kernels cannot compare is one sentence.</summary>
    [Fact]
    public void AProfileIsSortedIntoTheSimulatorsKindsPerIteration()
    {
        string run = WriteRun(TwoMicroBatches, new ProfileRange(2, 4));
        string profile = Profile("us",
            ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "1,000"),
            ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "1,000.5"),
            ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64_1x4x1_cga1x1x1_kernel0_0", "300"),
            ("void cudnn::compute_dot_do_o_specialized<1, 64>(const void *, const void *, void *)", "20"),
            ("adamw_step", "90"),
            ("void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>, std::array<char *, 1>>(int, T2, T3)", "10"),
            ("void at::vectorized_elementwise_kernel<8, at::CUDAFunctor_add<c10::BFloat16>, std::array<char *, 3>>(int, T2, T3)", "40"),
            ("swiglu_forward_v8", "60"));
        var v = KernelValidation.Of(run, profile);
        Assert.Equal(2, v.Iterations);
        Assert.Equal([1000.25e-6, 160e-6, 50e-6, 50e-6], [v.Measured.Gemm, v.Measured.Attention, v.Measured.Elementwise, v.Measured.Optimizer],
            (a, b) => Math.Abs(a - b) < 1e-15);
        Assert.Equal(KernelTime.Iteration(Gpt2, TwoMicroBatches, H100), v.Simulated);
        Assert.Equal("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", v.Kernels[0].Name);
        Assert.Equal(1, v.Kernels[0].CallsPerIteration);
        var (code, output, _) = ConsoleCapture.Run(ValidateCommand.Run, run, "--kernels", profile);
        Assert.Equal(0, code);
        Assert.Contains("all kernels", output);
        Assert.Contains("1.00", output);

        var (unprofiled, _, why) = ConsoleCapture.Run(ValidateCommand.Run, WriteRun(TwoMicroBatches, null), "--kernels", profile);
        Assert.Equal(2, unprofiled);
        Assert.Contains("was not run with --profile", why);
        var (ranks, _, many) = ConsoleCapture.Run(ValidateCommand.Run, WriteRun(TwoMicroBatches with { DataParallel = 2, GlobalBatch = 32 }, new ProfileRange(2, 4)), "--kernels", profile);
        Assert.Equal(2, ranks);
        Assert.Contains("ran on 2 ranks", many);
        var (badUnit, _, unit) = ConsoleCapture.Run(ValidateCommand.Run, run, "--kernels", Profile("cycle", ("adamw_step", "1")));
        Assert.Equal(2, badUnit);
        Assert.Contains("in 'cycle', not a unit of time", unit);
        var (both, _, twice) = ConsoleCapture.Run(ValidateCommand.Run, run, "--kernels", profile, "--offload");
        Assert.Equal(2, both);
        Assert.Contains("--offload and --kernels are two comparisons; pass one.", twice);
        var (cpu, _, onCpu) = ConsoleCapture.Run(ValidateCommand.Run, WriteRun(TwoMicroBatches, new ProfileRange(2, 4), ExecutionDevice.Cpu), "--kernels", profile);
        Assert.Equal(2, cpu);
        Assert.Contains("ran on the CPU: --kernels compares a GPU run's kernel profile", onCpu);
        var (unfused, _, scores) = ConsoleCapture.Run(ValidateCommand.Run, WriteRun(TwoMicroBatches with { AttentionBackend = AttentionBackend.Unfused }, new ProfileRange(2, 4)), "--kernels", profile);
        Assert.Equal(2, unfused);
        Assert.Contains("ran the unfused attention kernels (--attention-backend unfused)", scores);
        string parent = Path.Combine(TestTemp.Root, $"harness-kernels-two-{Guid.NewGuid():N}");
        WriteRun(TwoMicroBatches, new ProfileRange(2, 4), parent: parent);
        WriteRun(TwoMicroBatches, new ProfileRange(2, 4), parent: parent);
        var (two, _, runs) = ConsoleCapture.Run(ValidateCommand.Run, parent, "--kernels", profile);
        Assert.Equal(2, two);
        Assert.Contains("--kernels is the profile of one run; name that run's folder alone, not 2 runs.", runs);
    }
}
