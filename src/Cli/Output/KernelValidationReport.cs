using System.Globalization;
using System.Text.Json;
using Harness.Reproduce;
using Spectre.Console;

namespace Harness.Cli.Output;

/// <summary>
/// `harness validate --kernels`'s output: per run, its kernel profile's time by the kinds the simulator costs apart beside the
/// simulator's (<see cref="KernelValidation"/>), then the kernels that took the most; as a table, JSON, or CSV.
/// </summary>
public static class KernelValidationReport
{
    /// <summary>The longest kernels listed under each run's table.</summary>
    private const int Listed = 15;

    public static void Render(IReadOnlyList<KernelValidation> runs)
    {
        var console = Terminal.Out;
        if (Console.IsOutputRedirected) console.Profile.Width = Math.Max(console.Profile.Width, 160);
        foreach (var r in runs)
        {
            var table = new Table().Title($"[bold]{Markup.Escape(r.Run)}: kernel time per iteration, profiled (ncu, {r.Iterations} iteration(s)) vs simulated ({Markup.Escape(r.Gpu)})[/]")
                .AddColumn("part").AddColumn(new TableColumn("ms profiled").RightAligned()).AddColumn(new TableColumn("ms simulated").RightAligned())
                .AddColumn(new TableColumn("error").RightAligned());
            foreach (var (part, measured, simulated) in r.Parts)
                table.AddRow(part, Ms(measured), Ms(simulated), Error(measured, simulated));
            console.Write(table);
            var kernels = new Table().AddColumn("kernel").AddColumn("part").AddColumn(new TableColumn("calls").RightAligned())
                .AddColumn(new TableColumn("ms").RightAligned());
            foreach (var k in r.Kernels.Take(Listed))
                kernels.AddRow(Markup.Escape(k.Name.Length > 100 ? k.Name[..100] : k.Name), k.Kind.ToString(),
                    k.CallsPerIteration.ToString("0.#", CultureInfo.InvariantCulture), Ms(k.SecondsPerIteration));
            console.Write(kernels);
        }
        console.MarkupLine("error: the simulator's time over the profile's, minus one; positive: the simulator expects more. ncu runs each kernel alone on an otherwise idle GPU, which clocks higher than one held at load. The profile's optimizer holds the zeroing of the float32 main gradients, which the simulator's step does not count.");
    }

    private static string Ms(double seconds) => (seconds * 1e3).ToString("F2", CultureInfo.InvariantCulture);

    private static string Error(double measured, double simulated) =>
        measured > 0 ? (simulated / measured - 1).ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture) : "-";

    public static string Json(IReadOnlyList<KernelValidation> runs) =>
        JsonSerializer.Serialize(runs.Select(r => new
        {
            r.Run, r.Model, r.Gpu, r.Iterations,
            Parts = r.Parts.Select(p => new { p.Part, MeasuredSeconds = p.Measured, SimulatedSeconds = p.Simulated }),
            Kernels = r.Kernels.Select(k => new { k.Name, Part = k.Kind.ToString(), k.CallsPerIteration, k.SecondsPerIteration }),
        }), new JsonSerializerOptions { WriteIndented = true });

    public static void WriteCsv(IReadOnlyList<KernelValidation> runs, string path)
    {
        var c = CultureInfo.InvariantCulture;
        var lines = new List<string> { "run,model,gpu,iterations,part,measured_s,simulated_s" };
        lines.AddRange(runs.SelectMany(r => r.Parts.Select(p => string.Join(',', $"\"{r.Run}\"", $"\"{r.Model}\"", r.Gpu, r.Iterations.ToString(c), $"\"{p.Part}\"",
            p.Measured.ToString("R", c), p.Simulated.ToString("R", c)))));
        File.WriteAllLines(path, lines);
    }
}
