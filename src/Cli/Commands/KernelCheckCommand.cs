using Harness.Megatron;
using Harness.Simulator.Specs;
using System.Globalization;
using Harness.Cli.Arguments;
using Harness.Executor.Diagnostics;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness kernel-check`: compiles the executor's fused CUDA kernels for this machine's GPU, checks each against
/// libtorch's operators computing the same function, and times both side by side at caat-1b's shapes (the GPT path's
/// kernels, their own module, at gpt2-large's).
/// Prints one PASS/FAIL line per check and one timing line per kernel; exit code 1 when any check fails.
/// </summary>
public static class KernelCheckCommand
{
    private static readonly Flag[] Flags =
    {
        new("--libtorch", true, "folder of libtorch's .so files (default: python3's PyTorch)"),
        new("--no-timing", false, "only the correctness checks"),
        new("--help", false, "this help"),
    };

    public static int Run(string[] args)
    {
        if (CommandLine.ParseOrHelp(args, Flags, "usage: harness kernel-check [options]") is not { } cl) return 0;
        if (cl.Ignored.Count > 0) cl.Errors.Add($"options it does not take: {string.Join(' ', cl.Ignored)}; see harness kernel-check --help.");
        if (cl.Errors.Count > 0)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness kernel-check: {e}");
            return 2;
        }
        try { Console.WriteLine(TorchRuntime.Initialize(ExecutionDevice.Cuda, cl.String("--libtorch"))); }
        catch (NativeLoadException e)
        {
            Console.Error.WriteLine($"harness kernel-check: {e.Message}");
            return 2;
        }
        if (FusedKernels.Probe(0) is { } reason)
        {
            Console.Error.WriteLine($"harness kernel-check: the fused kernels did not load: {reason}");
            return 1;
        }
        var device = new Device(DeviceType.CUDA, 0);
        Console.WriteLine($"fused kernels on {Nvml.DeviceName(0) ?? device.ToString()}, compiled by {FusedKernels.Compiler}");
        int failures = Report(KernelCheck.Compare(device));
        // The GPT path's kernels are a module of their own: one that does not compile fails here, and a run falls back for them only.
        string? gpt = GptKernels.Probe(0);
        if (gpt is null) failures += Report(KernelCheck.CompareGpt(device));
        else
        {
            failures++;
            Console.WriteLine($"FAIL the GPT path's fused kernels (gpt_kernels.cu) did not load: {gpt}");
        }
        if (!cl.Switch("--no-timing"))
            foreach (var t in gpt is null ? KernelCheck.Time(device).Concat(KernelCheck.TimeGpt(device)) : KernelCheck.Time(device))
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"time {t.Name}: fused {t.FusedMs:F3} ms, libtorch {t.LibtorchMs:F3} ms ({t.Speedup:F2}x)"));
        Console.WriteLine(failures == 0 ? "all checks passed" : $"{failures} check(s) FAILED");
        return failures == 0 ? 0 : 1;
    }

    /// <summary>Prints one PASS/FAIL line per comparison, with its largest error and tolerance; returns the failures.</summary>
    private static int Report(IEnumerable<KernelComparison> comparisons)
    {
        int failures = 0;
        foreach (var c in comparisons)
        {
            if (!c.Passed) failures++;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{(c.Passed ? "PASS" : "FAIL")} {c.Name}: max error {c.MaxError:E2} (tolerance {c.Tolerance:E1})"));
        }
        return failures;
    }
}
