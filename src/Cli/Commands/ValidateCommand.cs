using Harness.Megatron;
using Harness.Cli.Output;
using System.Globalization;
using System.Text.Json;
using Harness.Cli.Arguments;
using Harness.Reproduce;
using Harness.Simulator.Specs;
using Spectre.Console;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness validate RUN...`: real runs (harness run --out folders, or folders holding them) beside the simulator's
/// estimate of the same configuration: step time, MFU and memory, the error per run and the mean absolute error. With
/// --offload, each rank's activation offload instead (<see cref="OffloadValidation"/>): bytes, compared to the byte, on CPU
/// runs too. With --kernels, a one-GPU run's kernel profile by the kinds of kernel the simulator costs apart
/// (<see cref="KernelValidation"/>).
/// </summary>
public static class ValidateCommand
{
    private static readonly Flag[] Flags =
    {
        new("--gpu", true, $"simulate on this preset instead of the one each run named ({string.Join(", ", GpuPresets.All.Keys)})"),
        new("--cluster", true, "simulate on this cluster file's GPU instead (harness calibrate --out writes one with measured constants)"),
        new("--csv", true, "also write the comparison to this CSV file"),
        new("--json", false, "print the comparison as JSON"),
        new("--plot", true, "also draw measured against simulated peak memory and step time per run, in the order given, into this PNG"),
        new("--title", true, "the plot's title (default: the runs' folders)"),
        new("--offload", false, "compare each rank's activation offload instead (Megatron-Kwai's --offload-ratio): the bytes the run's last step recorded, offloaded and left resident against the simulator's count, to the byte; CPU runs too"),
        new("--kernels", true, "compare this kernel profile of the run instead (scripts/gpu/profile-kernels.sh's kernels.csv.gz, Nsight Compute over a one-GPU run's --profile range): GEMM, attention, memory-bound and optimizer time per iteration against the simulator's"),
        new("--help", false, "this help"),
    };

    public static int Run(string[] args)
    {
        var (paths, options) = SplitFolders(args);
        var cl = CommandLine.Parse(options, Flags);
        if (cl.Switch("--help"))
        {
            Console.WriteLine("usage: harness validate RUN_FOLDER... [options]   (a folder holding run folders takes them all)");
            Flag.PrintHelp(Flags, 24);
            return 0;
        }
        GpuSpec? gpu = null;
        if (cl.String("--gpu") is string name && !GpuPresets.All.TryGetValue(name, out gpu))
            cl.Errors.Add($"--gpu '{name}' is not a preset; valid: {string.Join(", ", GpuPresets.All.Keys)}.");
        if (cl.String("--cluster") is string file)
        {
            if (gpu is not null) cl.Errors.Add("--gpu and --cluster both name the GPU; pass one.");
            try { gpu = SpecJson.ReadCluster(file).Gpu; }
            catch (SpecFileException e) { cl.Errors.Add(e.Message); }
        }
        if (cl.Ignored.Count > 0) cl.Errors.Add($"options it does not take: {string.Join(' ', cl.Ignored)}; see harness validate --help.");
        if (paths.Count == 0) cl.Errors.Add("name at least one run folder (harness run --out DIR), or a folder holding run folders.");
        foreach (var p in paths.Where(p => !Directory.Exists(p))) cl.Errors.Add($"'{p}' is not a folder.");
        foreach (var flag in new[] { "--csv", "--plot" })
            if (cl.String(flag) is string output && OutputFolder.Writable(output, flag) is string outputError) cl.Errors.Add(outputError);
        bool offload = cl.Switch("--offload");
        string? kernels = cl.String("--kernels");
        if (offload && kernels is not null) cl.Errors.Add("--offload and --kernels are two comparisons; pass one.");
        foreach (var (mode, on) in new[] { ("--offload", offload), ("--kernels", kernels is not null) })
            foreach (var flag in new[] { "--plot", "--title" })
                if (on && cl.String(flag) is not null) cl.Errors.Add($"{flag} is the step time and memory plot's; with {mode} there is no plot, only the table, --csv and --json.");
        if (kernels is not null && !File.Exists(kernels)) cl.Errors.Add($"--kernels '{kernels}' is not a file (scripts/gpu/profile-kernels.sh writes kernels.csv.gz).");
        if (kernels is not null && paths.Where(Directory.Exists).SelectMany(RunFolders).Count() is > 1 and var runs)
            cl.Errors.Add($"--kernels is the profile of one run; name that run's folder alone, not {runs} runs.");
        if (cl.Errors.Count > 0)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness validate: {e}");
            return 2;
        }
        if (offload)
        {
            if (Compare(paths, folder => OffloadValidation.Of(folder, gpu)) is not { } ranks) return 2;
            if (cl.String("--csv") is string offloadCsv) OffloadValidationReport.WriteCsv(ranks, offloadCsv);
            if (cl.Switch("--json")) Console.WriteLine(OffloadValidationReport.Json(ranks));
            else OffloadValidationReport.Render(ranks);
            return 0;
        }
        if (kernels is not null)
        {
            if (Compare<KernelValidation>(paths, folder => [KernelValidation.Of(folder, kernels, gpu)]) is not { } profiled) return 2;
            if (cl.String("--csv") is string kernelCsv) KernelValidationReport.WriteCsv(profiled, kernelCsv);
            if (cl.Switch("--json")) Console.WriteLine(KernelValidationReport.Json(profiled));
            else KernelValidationReport.Render(profiled);
            return 0;
        }
        if (Compare<RunValidation>(paths, folder => [RunValidation.Of(folder, gpu)]) is not { } rows) return 2;
        if (cl.String("--csv") is string csv) WriteCsv(rows, csv);
        if (cl.String("--plot") is string plot) ValidationPlot.Write(rows, plot, cl.String("--title") ?? string.Join(", ", paths));
        if (cl.Switch("--json")) Console.WriteLine(JsonSerializer.Serialize(rows.Select(Flat), new JsonSerializerOptions { WriteIndented = true }));
        else Render(rows);
        return 0;
    }

    /// <summary>The rows <paramref name="of"/> makes of every run folder under <paramref name="paths"/>; null, once it said why on
    /// standard error, when there are none.</summary>
    private static List<T>? Compare<T>(IReadOnlyList<string> paths, Func<string, IEnumerable<T>> of)
    {
        var rows = new List<T>();
        var skipped = new List<string>();
        foreach (var folder in paths.SelectMany(RunFolders))
        {
            try { rows.AddRange(of(folder)); }
            catch (RunValidationException e) { skipped.Add(e.Message); }
        }
        // Beside compared runs a skipped one is a note; with none compared, why each was skipped is the error.
        foreach (var reason in skipped) Console.Error.WriteLine($"harness validate: {(rows.Count > 0 ? "skipped: " : "")}{reason}");
        if (rows.Count > 0) return rows;
        if (skipped.Count == 0)
            Console.Error.WriteLine($"harness validate: {string.Join(", ", paths.Select(p => $"'{p}'"))} {(paths.Count == 1 ? "holds" : "hold")} no run folder (a harness run --out folder, with its summary.json).");
        return null;
    }

    /// <summary>Run folders (the arguments that are neither flags nor a flag's value) apart from the options.</summary>
    private static (List<string> Folders, string[] Options) SplitFolders(string[] args)
    {
        var folders = new List<string>();
        var options = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) { folders.Add(args[i]); continue; }
            options.Add(args[i]);
            // An unknown option takes the next word as its value, as CommandLine.Parse reads it, so that the word is not
            // reported again as a missing folder.
            var flag = Flags.FirstOrDefault(f => f.Name == args[i].Split('=')[0]);
            bool takesValue = flag?.TakesValue ?? !args[i].Contains('=');
            if (takesValue && i + 1 < args.Length && (flag is not null || !args[i + 1].StartsWith("--", StringComparison.Ordinal))) options.Add(args[++i]);
        }
        return (folders, options.ToArray());
    }

    /// <summary>The folder itself when it holds a summary, else its sub-folders (two levels) that do, in name order.</summary>
    private static IEnumerable<string> RunFolders(string path) =>
        File.Exists(Path.Combine(path, "summary.json"))
            ? [path]
            : Directory.EnumerateDirectories(path).Order(StringComparer.Ordinal)
                .SelectMany(d => File.Exists(Path.Combine(d, "summary.json")) ? [d] : Directory.EnumerateDirectories(d).Order(StringComparer.Ordinal)
                    .Where(s => File.Exists(Path.Combine(s, "summary.json"))));

    private static void Render(IReadOnlyList<RunValidation> rows)
    {
        var console = Terminal.Out;
        if (Console.IsOutputRedirected) console.Profile.Width = Math.Max(console.Profile.Width, 160);
        var table = new Table().Title("[bold]measured (harness run) vs simulated (harness simulate)[/]")
            .AddColumn("run").AddColumn("model, layout").AddColumn("GPU")
            .AddColumn(new TableColumn("step ms run / sim").RightAligned()).AddColumn(new TableColumn("throughput error").RightAligned())
            .AddColumn(new TableColumn("MFU run / sim").RightAligned())
            .AddColumn(new TableColumn("GiB allocated peak run / sim").RightAligned()).AddColumn(new TableColumn("memory error").RightAligned())
            .AddColumn(new TableColumn("GiB in use (NVML) / reserved (sim)").RightAligned());
        foreach (var r in rows)
            table.AddRow(Markup.Escape(r.Run), Markup.Escape(Layout(r)), Markup.Escape(r.Gpu),
                $"{r.MeasuredStepSeconds * 1e3:F0} / {r.Estimate.StepTimeSeconds * 1e3:F0}",
                r.LaunchBound ? "(launch-bound)" : $"{r.Error:+0.0%;-0.0%}",
                $"{(r.MeasuredMfu is double m ? m.ToString("P1", CultureInfo.InvariantCulture) : "-")} / {r.Estimate.Mfu:P1}",
                $"{(r.MeasuredAllocatedPeakBytes is long a ? (a / 1073741824.0).ToString("F2", CultureInfo.InvariantCulture) : "-")} / {r.Estimate.PeakMemoryBytes / 1073741824.0:F2}",
                r.MemoryError is double e ? $"{e:+0.0%;-0.0%}" : "-",
                $"{r.MeasuredMemoryBytes / 1073741824.0:F1} / {r.Estimate.ReservedBytes / 1073741824.0:F1}");
        console.Write(table);
        var compared = rows.Where(r => !r.LaunchBound).ToList();
        if (compared.Count > 0)
        {
            var worst = compared.MaxBy(r => Math.Abs(r.Error))!;
            console.MarkupLine($"throughput: mean absolute error [bold]{compared.Average(r => Math.Abs(r.Error)):P1}[/] over {compared.Count} run(s), " +
                               $"worst {worst.Error:+0.0%;-0.0%} ({Markup.Escape(worst.Run)}); positive: the simulator expects more than the run did.");
        }
        var memory = rows.Where(r => r.MemoryError is not null).ToList();
        if (memory.Count > 0)
            console.MarkupLine($"allocated peak: mean absolute error [bold]{memory.Average(r => Math.Abs(r.MemoryError!.Value)):P1}[/] over {memory.Count} run(s); positive: the simulator expects more than the allocator's peak.");
        if (compared.Count < rows.Count)
            console.MarkupLine($"{rows.Count - compared.Count} launch-bound run(s) (under 1% MFU: the host's loop, not the GPU, sets their pace) listed, not averaged.");
        if (rows.Count(r => r.Deterministic) is int deterministic and > 0)
            console.MarkupLine($"{deterministic} run(s) ran --deterministic-mode: flash's deterministic backward and libtorch's deterministic algorithms cost time the simulator does not model.");
    }

    private static string Layout(RunValidation r)
    {
        var c = r.Config;
        string layout = $"{r.Model.Name} d{c.DataParallel} t{c.TensorParallel} p{c.PipelineParallel} c{c.ContextParallel} b{c.MicroBatch} x{c.NumMicroBatches}";
        if (c.RecomputeOrNone.Granularity != RecomputeGranularity.None) layout += $" {c.RecomputeOrNone.Granularity.ToString().ToLowerInvariant()} recompute";
        return r.Deterministic ? $"{layout} deterministic" : layout;
    }

    private static object Flat(RunValidation r) => new
    {
        r.Run, r.Device, r.Gpu, Model = r.Model.Name, Layout = Layout(r), r.MeasuredStepSeconds, SimulatedStepSeconds = r.Estimate.StepTimeSeconds,
        r.Error, r.LaunchBound, r.MeasuredMfu, SimulatedMfu = r.Estimate.Mfu, r.MeasuredMemoryBytes, SimulatedPeakMemoryBytes = r.Estimate.PeakMemoryBytes,
        r.MeasuredAllocatedPeakBytes, r.MemoryError, SimulatedReservedBytes = r.Estimate.ReservedBytes,
    };

    private static void WriteCsv(IReadOnlyList<RunValidation> rows, string path)
    {
        var c = CultureInfo.InvariantCulture;
        var lines = new List<string> { "run,device,gpu,model,layout,measured_step_s,simulated_step_s,throughput_error,launch_bound,measured_mfu,simulated_mfu,measured_memory_bytes,simulated_peak_bytes,measured_allocated_peak_bytes,memory_error,simulated_reserved_bytes" };
        lines.AddRange(rows.Select(r => string.Join(',', r.Run, $"\"{r.Device}\"", r.Gpu, r.Model.Name, $"\"{Layout(r)}\"",
            r.MeasuredStepSeconds.ToString("R", c), r.Estimate.StepTimeSeconds.ToString("R", c), r.Error.ToString("R", c), r.LaunchBound,
            r.MeasuredMfu?.ToString("R", c) ?? "", r.Estimate.Mfu.ToString("R", c), r.MeasuredMemoryBytes.ToString(c), r.Estimate.PeakMemoryBytes.ToString(c),
            r.MeasuredAllocatedPeakBytes?.ToString(c) ?? "", r.MemoryError?.ToString("R", c) ?? "", r.Estimate.ReservedBytes.ToString(c))));
        File.WriteAllLines(path, lines);
    }
}
