using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>
/// A one-GPU run's kernel profile beside the simulator's kernel time for the same description (`harness validate RUN
/// --kernels CSV`): per iteration, the GEMMs, attention, the memory-bound kernels and the optimizer, measured
/// (<see cref="KernelProfile"/>) and simulated (<see cref="KernelTime.Iteration"/>). Where the step's error comes from, part
/// by part. ncu times each kernel alone, at the clock an idle GPU boosts to, where the simulator's constants describe a GPU
/// held at load: its GEMMs read faster than a step runs them.
/// </summary>
public sealed record KernelValidation(string Run, string Model, RunDescription Config, string Gpu, int Iterations, KernelTime Measured,
    KernelTime Simulated, IReadOnlyList<ProfiledKernel> Kernels)
{
    /// <summary>The run in <paramref name="folder"/>, made with --profile, and the kernel profile of its range at
    /// <paramref name="profile"/>; <paramref name="gpu"/> replaces the preset the run named.</summary>
    public static KernelValidation Of(string folder, string profile, GpuSpec? gpu = null) =>
        SummaryRun.Compare(folder, "cost this run's kernels", (root, ran) =>
        {
            var d = ran.Description;
            if (ran.Device != ExecutionDevice.Cuda)
                throw new RunValidationException($"{folder} ran on the CPU: --kernels compares a GPU run's kernel profile (scripts/gpu/profile-kernels.sh).");
            if (d.WorldSize != 1)
                throw new RunValidationException($"{folder} ran on {d.WorldSize} ranks: --kernels compares a one-GPU run's profile, whose kernels are all one rank's.");
            if (!root.TryGetProperty("Settings", out var settings) || !settings.TryGetProperty("Profile", out var range)
                || range.ValueKind != System.Text.Json.JsonValueKind.Object)
                throw new RunValidationException($"{folder} was not run with --profile: its summary.json names no profiled range to divide the kernel times by.");
            int iterations = checked((int)(range.GetProperty("StepEnd").GetInt64() - range.GetProperty("StepStart").GetInt64()));
            IReadOnlyList<ProfiledKernel> kernels;
            try { kernels = KernelProfile.Read(profile, iterations); }
            catch (InvalidDataException e) { throw new RunValidationException(e.Message); }
            var preset = gpu ?? RunValidation.Preset(ran.Gpu, folder);
            // The unfused backends' score and context matmuls are cuBLAS's, their softmax element-wise: the profile cannot tell
            // them from the layers' GEMMs and memory-bound kernels, where the simulator costs them as attention.
            if (AttentionKernels.KeepsScores(d.AttentionBackend == AttentionBackend.Auto ? AttentionKernels.Resolve(d, preset) : d.AttentionBackend))
                throw new RunValidationException($"{folder} ran the unfused attention kernels (--attention-backend {d.AttentionBackend.ToString().ToLowerInvariant()}): --kernels compares runs of flash or cuDNN attention, whose kernels it can tell apart.");
            double Sum(KernelKind kind) => kernels.Where(k => k.Kind == kind).Sum(k => k.SecondsPerIteration);
            var measured = new KernelTime(Sum(KernelKind.Gemm), Sum(KernelKind.Attention), Sum(KernelKind.Elementwise), Sum(KernelKind.Optimizer));
            string run = Path.GetFileName(Path.TrimEndingDirectorySeparator(folder));
            return new KernelValidation(run, ran.Model.Name, d, preset.Name, iterations, measured, KernelTime.Iteration(ran.Model, d, preset), kernels);
        });

    /// <summary>The parts by name, measured and simulated seconds per iteration, the whole last.</summary>
    public IEnumerable<(string Part, double Measured, double Simulated)> Parts =>
    [
        ("GEMM", Measured.Gemm, Simulated.Gemm), ("attention", Measured.Attention, Simulated.Attention),
        ("memory-bound", Measured.Elementwise, Simulated.Elementwise), ("optimizer", Measured.Optimizer, Simulated.Optimizer),
        ("all kernels", Measured.Total, Simulated.Total),
    ];
}
