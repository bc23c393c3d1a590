using System.Diagnostics;

namespace Harness.Tests;

/// <summary>
/// The GPU scripts' exit codes and last words, on CPU: a stand-in `harness` (a shell script) fails each run as a machine
/// without CUDA does, or writes a summary.json for the runs named, so the scripts' own logic runs without a GPU.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")] // bash scripts
public sealed class GpuScriptTests : IDisposable
{
    private static readonly string Scripts = Path.GetFullPath(Path.Combine(ExperimentFileTests.ExperimentsDir, "..", "scripts", "gpu"));
    private static readonly string Summary = Path.GetFullPath(Path.Combine(ExperimentFileTests.ExperimentsDir, "..", "results", "executor", "nvidia-h200", "gpt2-large", "summary.json"));
    /// <summary>A summary as `harness run` writes it today (Model, Description and Settings at its root).</summary>
    private static readonly string CurrentSummary = Path.GetFullPath(Path.Combine(ExperimentFileTests.ExperimentsDir, "..", "results", "parallel", "h100-80gb-hbm3-one-gpu", "serial", "summary.json"));
    private readonly string dir = Directory.CreateTempSubdirectory("harness-gpu-scripts-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    /// <summary>A `harness` whose runs whose --out ends in one of <paramref name="succeeding"/> (a shell pattern) write a
    /// summary.json; everything else fails in one sentence, exit code 2.</summary>
    private string StandIn(string succeeding = "", string? summary = null)
    {
        string path = Path.Combine(dir, "harness");
        File.WriteAllText(path, $$"""
            #!/usr/bin/env bash
            prev=; out=
            for a; do [ "$prev" = --out ] && out=$a; prev=$a; done
            case "$out" in {{(succeeding.Length > 0 ? succeeding : "/nothing/")}}) mkdir -p "$out"; cp '{{summary ?? Summary}}' "$out/summary.json"; exit 0;; esac
            echo "harness $1: --device cuda needs libtorch with CUDA." >&2
            exit 2
            """.Replace("\r", ""));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    private static (int Code, string Out, string Err) Bash(string script, params string[] args) => Bash(script, new Dictionary<string, string>(), args);

    private static (int Code, string Out, string Err) Bash(string script, IReadOnlyDictionary<string, string> env, params string[] args)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (name, value) in env) psi.Environment[name] = value;
        psi.ArgumentList.Add(Path.Combine(Scripts, script));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["CAAT_MBS"] = "8";
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output.Result, error);
    }

    /// <summary>A Python script of scripts/gpu run with <paramref name="args"/>: its exit code and standard output.</summary>
    private static (int Code, string Out) Python(string script, params string[] args)
    {
        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(Scripts, script));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var error = p.StandardError.ReadToEndAsync();   // read beside stdout, so neither pipe can fill and stall the script
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + error.Result);
    }

    /// <summary>vs-pytorch.sh reads the harness run's summary as `harness run` writes it: its row holds the run's sequence
    /// length, tokens/s and allocator peak (here without PyTorch, whose rows are reported as failed).</summary>
    [Fact]
    public void TheSideBySideBenchmarkTabulatesTheHarnessRunFromItsSummary()
    {
        string out_ = Path.Combine(dir, "vs");
        var (code, _, _) = Bash("vs-pytorch.sh", new Dictionary<string, string> { ["MODELS"] = "caat-1b" }, StandIn("*/caat-1b", CurrentSummary), out_, "h100-sxm");
        Assert.Equal(0, code);
        var rows = File.ReadAllLines(Path.Combine(out_, "vs-pytorch.csv"));
        Assert.Equal("system,model,micro_batch,seq,step_ms,tokens_per_s,peak_allocated_gib,device,version,vs_torch_compile", rows[0]);
        Assert.StartsWith("harness,caat-1b,8,1024,92.68,176782,4.08,", Assert.Single(rows.Skip(1)));
    }

    /// <summary>offload-and-validate.sh's numerics check compares the deterministic runs' metrics.csv iteration by iteration:
    /// a repeat of N 0 the same bits, an N 4 whose third loss differs in its last digit named as differing there, and the
    /// script then exits 1 (with every other step succeeding), 0 where N 4 is the same bits too.</summary>
    [Theory]
    [InlineData("9.000001", 1)]
    [InlineData("9.0", 0)]
    public void TheOffloadSweepComparesItsDeterministicRunsBitForBit(string n4Loss, int exitCode)
    {
        string harness = Path.Combine(dir, "harness"), out_ = Path.Combine(dir, "offload");
        File.WriteAllText(harness, $$"""
            #!/usr/bin/env bash
            prev=; out=
            for a; do [ "$prev" = --out ] && out=$a; prev=$a; done
            [ "$1" = run ] || { [ -n "$out" ] && echo '{}' >"$out"; exit 0; }   # calibrate and validate succeed
            case "$out" in */determinism/*)
              last=9.0; [[ $out == */n4 ]] && last={{n4Loss}}
              mkdir -p "$out"; printf 'iteration,loss,grad_norm\n1,10.5,2.25\n2,9.75,2.0\n3,%s,1.5\n' "$last" >"$out/metrics.csv"; exit 0;;
            esac
            exit 2
            """.Replace("\r", ""));
        File.SetUnixFileMode(harness, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var (code, output, _) = Bash("offload-and-validate.sh", new Dictionary<string, string> { ["OFFLOAD_POINTS"] = " ", ["MODELS"] = "0" },
            harness, out_, "h100-sxm");
        Assert.Equal(exitCode, code);
        Assert.Contains($"{out_}/determinism/n0/metrics.csv vs {out_}/determinism/n0-again/metrics.csv: 3 iterations, losses and gradient norms bit-identical", output);
        Assert.Contains(exitCode == 1 ? $"{out_}/determinism/n0/metrics.csv vs {out_}/determinism/n4/metrics.csv: 1 of 3 iterations differ, the first at iteration 3"
            : $"{out_}/determinism/n0/metrics.csv vs {out_}/determinism/n4/metrics.csv: 3 iterations, losses and gradient norms bit-identical", output);
    }

    [Fact]
    public void TheExecutorBenchExitsOneWithOneSentenceWhenEveryRunFailed()
    {
        string out_ = Path.Combine(dir, "bench");
        var (code, output, error) = Bash("run-executor-bench.sh", StandIn(), out_);
        Assert.Equal(1, code);
        Assert.Equal($"run-executor-bench.sh: every run failed (smoke-fp32 smoke-bf16 caat-1b-mbs8 caat-1b-mbs8-libtorch-only gpt2-large " +
                     $"gpt2-large-full host-overhead); no summary.json under {out_}, their output is in {out_}/bench.log.", error.Trim());
        Assert.Contains("== gpt2-large failed (exit code 2): no summary.json", output);
        Assert.DoesNotContain("Traceback", output);
        Assert.Equal(2, File.ReadAllLines(Path.Combine(out_, "results.md")).Length); // the table's header alone
    }

    [Fact]
    public void TheExecutorBenchTabulatesTheRunsThatRanAndNamesTheOthers()
    {
        string out_ = Path.Combine(dir, "bench");
        var (code, output, error) = Bash("run-executor-bench.sh", StandIn("*/smoke-fp32|*/gpt2-large-full"), out_);
        Assert.Equal(0, code);
        Assert.Equal($"run-executor-bench.sh: 5 run(s) left no summary.json (smoke-bf16 caat-1b-mbs8 caat-1b-mbs8-libtorch-only gpt2-large " +
                     $"host-overhead); their output is in {out_}/bench.log.", error.Trim());
        var rows = File.ReadAllLines(Path.Combine(out_, "results.md")).Skip(2).Select(r => r.Split('|')[1].Trim()).ToList();
        Assert.Equal(["gpt2-large-full", "smoke-fp32"], rows);
        Assert.Contains("| gpt2-large-full | NVIDIA H200 | 453.0 |", File.ReadAllText(Path.Combine(out_, "results.md")));
    }

    [Fact]
    public void AMultiGpuRunOutOfMemoryRunsOnceMoreWithSelectiveRecomputation()
    {
        string out_ = Path.Combine(dir, "tp8");
        var (code, _, error) = Bash("run-tp8-vs-dp8.sh", StandIn("*-selective"), out_);
        Assert.Equal(0, code);
        Assert.Equal($"run-tp8-vs-dp8.sh: 4 run(s) left no summary.json (tp8 tp8-sp dp8 dp8-distopt); their output is in {out_}/tp8-dp8.log.", error.Trim());
        var rows = File.ReadAllLines(Path.Combine(out_, "results.md")).Skip(2).Select(r => r.Split('|')[1].Trim()).ToList();
        Assert.Equal(["dp8-distopt-selective", "dp8-selective", "tp8-selective", "tp8-sp-selective"], rows);
    }

    [Fact]
    public void CalibrateEndsWithTheHarnesssSentenceAndItsExitCodeNoTraceback()
    {
        var (code, output, error) = Bash("calibrate.sh", StandIn(), Path.Combine(dir, "calibrate"));
        Assert.Equal(2, code);
        Assert.Equal("harness calibrate: --device cuda needs libtorch with CUDA.", output.Trim().Split('\n')[^1]);
        Assert.DoesNotContain("Traceback", output + error);
    }

    /// <summary>
    /// profile-kernels.sh wired end to end without a GPU: a stand-in ncu runs the command it wraps and writes Nsight Compute's
    /// raw CSV (log lines, header, base units, a row per kernel) to its --log-file; a stand-in `harness run` writes the
    /// summary of a profiled one-GPU run; the real `harness validate --kernels` then reads the gzipped profile and sets it
    /// beside the simulator into kernels.md and kernels-validate.csv.
    /// </summary>
    [Fact]
    public void TheKernelProfileIsGzippedAndSetBesideTheSimulator()
    {
        string summary = Path.Combine(dir, "profiled-summary.json");
        var model = Harness.Simulator.Specs.ModelPresets.All["caat-130m"];
        var description = new Harness.Simulator.Specs.RunDescription(MicroBatch: 8, GlobalBatch: 8, Precision: Harness.Simulator.Specs.Precision.Bf16,
            AttentionBackend: Harness.Simulator.Specs.AttentionBackend.Fused, Implementation: Harness.Simulator.Specs.TransformerImpl.Harness);
        var settings = new Harness.Simulator.Specs.RunSettings(MockData: true, Device: Harness.Simulator.Specs.ExecutionDevice.Cuda, Gpu: "h100-sxm",
            Profile: new Harness.Simulator.Specs.ProfileRange(2, 4), TrainIters: 4);
        Harness.Executor.Training.Records.RunSummary.From(new Harness.Executor.Training.Records.RunRecord(model, description, settings, [], "NVIDIA H100 80GB HBM3", "test", 1, model.VocabSize, []),
            [new Harness.Executor.Training.Records.IterationRecord(4, 100, 1, 400, 0.4, 10, 1, 1e-4, 60L << 30, 60L << 30, 0.2, 100)]).Write(summary);
        string harness = Path.Combine(dir, "harness"), bin = Path.Combine(dir, "bin");
        Directory.CreateDirectory(bin);
        File.WriteAllText(harness, $$"""
            #!/usr/bin/env bash
            [ "$1" = validate ] && exec dotnet '{{Path.Combine(AppContext.BaseDirectory, "harness.dll")}}' "$@"
            prev=; out=
            for a; do [ "$prev" = --out ] && out=$a; prev=$a; done
            mkdir -p "$out"; cp '{{summary}}' "$out/summary.json"
            """.Replace("\r", ""));
        File.WriteAllText(Path.Combine(bin, "ncu"), $$"""
            #!/usr/bin/env bash
            log=
            while [ "$1" != '{{harness}}' ]; do [ "$1" = --log-file ] && log=$2; shift; done
            "$@" || exit $?
            { echo '==PROF== Connected to process 1 (harness)'; echo '"ID","Kernel Name","gpu__time_duration.sum"'; echo '"","","ns"'
              echo '"0","nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT","4,000,000"'; echo '"1","adamw_step","2,000,000"'; } > "$log"
            """.Replace("\r", ""));
        foreach (var f in new[] { harness, Path.Combine(bin, "ncu") })
            File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string out_ = Path.Combine(dir, "profile");
        var (code, output, error) = Bash("profile-kernels.sh", new Dictionary<string, string> { ["PATH"] = $"{bin}:{Environment.GetEnvironmentVariable("PATH")}" },
            harness, out_, "--model", "caat-130m", "--bf16");
        Assert.True(code == 0, error);
        Assert.True(File.Exists(Path.Combine(out_, "kernels.csv.gz")));
        Assert.Contains("all kernels", File.ReadAllText(Path.Combine(out_, "kernels.md")));
        Assert.Contains("all kernels", output);
        // Two profiled iterations: 4 ms of GEMM and 2 ms of AdamW are 2 and 1 ms per iteration.
        var rows = File.ReadAllLines(Path.Combine(out_, "kernels-validate.csv"));
        Assert.StartsWith("\"run\",\"caat-130m\",h100-sxm,2,\"GEMM\",0.002,", rows[1]);
        Assert.StartsWith("\"run\",\"caat-130m\",h100-sxm,2,\"optimizer\",0.001,", rows[4]);
    }

    /// <summary>A run folder as harness run leaves it, for the comparison: metrics.csv's loss column and summary.json's fields.</summary>
    private void RunFolder(string root, string name, double[] losses, double syncFactor = 1, bool deterministic = false)
    {
        string folder = Path.Combine(root, name);
        Directory.CreateDirectory(folder);
        File.WriteAllLines(Path.Combine(folder, "metrics.csv"),
            losses.Select((l, i) => $"{i + 1},{l.ToString(System.Globalization.CultureInfo.InvariantCulture)}").Prepend("iteration,loss"));
        File.WriteAllText(Path.Combine(folder, "summary.json"),
            "{\"Device\": \"NVIDIA H200\", \"MedianStepMs\": 12.5, \"PeakAllocatedBytes\": 2147483648, \"Description\": {\"SyncFactor\": " +
            syncFactor.ToString(System.Globalization.CultureInfo.InvariantCulture) + "}, \"Settings\": {\"DeterministicMode\": " +
            (deterministic ? "true" : "false") + "}}");
    }

    /// <summary>Without --deterministic-mode an offloading run may differ from its twin in the last bits (cuDNN's attention
    /// backward accumulates in a varying order): listed, and the comparison still passes; so does a twin whose kernels are
    /// unknown (no summary). Where both ran deterministic kernels the difference fails it.</summary>
    [Fact]
    public void AnOffloadingRunMayDifferFromItsTwinOnlyWhereTheirKernelsWereNotBothDeterministic()
    {
        string out_ = Path.Combine(dir, "layouts-nondeterministic");
        RunFolder(out_, "serial", [10.0, 9.0, 8.0]);
        RunFolder(out_, "tp2", [10.005, 9.01, 8.05]);
        RunFolder(out_, "tp2-offload0.5", [10.005, 9.01, 8.050001]);
        // A twin killed before it wrote its summary (metrics only) is compared as one of unknown kernels.
        RunFolder(out_, "cp2", [10.0, 9.0, 8.0], deterministic: true);
        File.Delete(Path.Combine(out_, "cp2", "summary.json"));
        RunFolder(out_, "cp2-offload0.5", [10.0, 9.0, 8.000001], deterministic: true);
        var (code, output) = Python("one-gpu-layouts.py", out_, "serial");
        Assert.Equal(0, code);
        Assert.Contains("| pass | differs from tp2 (kernels not deterministic) |", output);
        Assert.Contains("| pass | differs from cp2 (kernels not deterministic) |", output);
        // Where both ran deterministic kernels the same difference fails the comparison.
        RunFolder(out_, "tp2", [10.005, 9.01, 8.05], deterministic: true);
        RunFolder(out_, "tp2-offload0.5", [10.005, 9.01, 8.050001], deterministic: true);
        (code, output) = Python("one-gpu-layouts.py", out_, "serial");
        Assert.Equal(1, code);
        Assert.Contains("| pass | DIFFERS from tp2 |", output);
    }

    [Fact]
    public void TheLayoutComparisonHoldsEachRunToTheBf16BoundsAndFailsOnAnyOver()
    {
        string out_ = Path.Combine(dir, "layouts");
        RunFolder(out_, "serial", [10.0, 9.0, 8.0]);
        RunFolder(out_, "tp2", [10.005, 9.01, 8.05]);    // 5e-4 at the first step, 6.25e-3 at most: within 1e-3 and 1e-2
        RunFolder(out_, "cp2", [10.02, 9.0, 8.0]);       // 2e-3 at the first step: over 1e-3
        RunFolder(out_, "tp2-p0.5", [10.0, 9.5, 9.0], 0.5); // another function: listed, not held to a bound
        RunFolder(out_, "tp2-offload0.5", [10.005, 9.01, 8.05]);  // the same layout with offload: bit for bit as tp2
        RunFolder(out_, "cp2-offload0.5", [10.02, 9.0, 8.000001]); // differs from cp2 in the last step: listed, not failed
        RunFolder(out_, "pp2", [10.0, 9.0, 8.0], deterministic: true);
        RunFolder(out_, "pp2-offload0.5", [10.0, 9.0, 8.000001], deterministic: true); // deterministic kernels: must be the same bits
        var (code, output) = Python("one-gpu-layouts.py", out_, "serial");
        Assert.Equal(1, code);
        var rows = File.ReadAllLines(Path.Combine(out_, "equivalence.csv")).Skip(1).ToDictionary(l => l.Split(',')[0], l => l.Split(','));
        Assert.Equal("pass", rows["tp2"][^2]);
        Assert.Equal("FAIL", rows["cp2"][^2]);
        Assert.Equal("p < 1: no bound", rows["tp2-p0.5"][^2]);
        Assert.Equal("", rows["tp2"][^1]);
        Assert.Equal("bit-identical to tp2", rows["tp2-offload0.5"][^1]);
        Assert.Equal("differs from cp2 (kernels not deterministic)", rows["cp2-offload0.5"][^1]);
        Assert.Equal("DIFFERS from pp2", rows["pp2-offload0.5"][^1]);
        Assert.Contains("| tp2 | 3 | 5.00e-04 | 6.25e-03 |", output);
    }

    /// <summary>offload-table.py sets each run of the sweep beside its simulation, in the sweep's order, and names the runs
    /// outside the issue's targets: 332 ms against 330 simulated (+0.6%) and a peak of 50 GiB simulated as 51 (+2.0%) pass; 480
    /// against 420 (+14.3%) and 49 against 45 GiB (-8.2%) do not.</summary>
    [Fact]
    public void TheOffloadTableHoldsEachPointToTheTargets()
    {
        const string header = "run,measured_step_s,simulated_step_s,measured_allocated_peak_bytes,simulated_peak_bytes";
        string calibrated = Path.Combine(dir, "calibrated.csv"), preset = Path.Combine(dir, "preset.csv");
        long gib = 1L << 30;
        File.WriteAllLines(calibrated, [header, $"none-n4,0.480,0.420,{49 * gib},{45 * gib}", $"none-n0,0.332,0.330,{50 * gib},{51 * gib}"]);
        File.WriteAllLines(preset, [header, $"none-n0,0.332,0.350,{50 * gib},{51 * gib}"]);
        var (code, output) = Python("offload-table.py", calibrated, preset);
        var lines = output.Split('\n');
        Assert.Equal(0, code);
        Assert.Equal("| none, N 0 | 332 | 330 | +0.6% | -5.1% | 50.00 | 51.00 | +2.0% |", lines[2]);
        Assert.Equal("| none, N 4 | 480 | 420 | +14.3% | - | 49.00 | 45.00 | -8.2% |", lines[3]);
        Assert.Contains("Outside the targets (5% step on calibrated constants, 3% memory): none, N 4 memory -8.2%; none, N 4 step +14.3%.", lines);
    }
}
