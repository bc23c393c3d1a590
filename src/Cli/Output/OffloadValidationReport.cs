using System.Globalization;
using System.Text.Json;
using Harness.Reproduce;
using Spectre.Console;

namespace Harness.Cli.Output;

/// <summary>
/// `harness validate --offload`'s output: per run and rank, Megatron-Kwai's offload as the run's bookkeeping recorded it
/// beside the simulator's count (<see cref="OffloadValidation"/>), as a table, JSON, or CSV with the bytes whole.
/// </summary>
public static class OffloadValidationReport
{
    private const double MiB = 1 << 20;

    public static void Render(IReadOnlyList<OffloadValidation> rows)
    {
        var console = Terminal.Out;
        if (Console.IsOutputRedirected) console.Profile.Width = Math.Max(console.Profile.Width, 160);
        var table = new Table().Title("[bold]activation offload: the run's bookkeeping (harness run) vs the simulator's count, last step[/]")
            .AddColumn("run").AddColumn(new TableColumn("alpha").RightAligned()).AddColumn(new TableColumn("rank (stage)").RightAligned())
            .AddColumn(new TableColumn("chunk forwards run / sim").RightAligned()).AddColumn(new TableColumn("MiB saved run / sim").RightAligned())
            .AddColumn(new TableColumn("MiB offloaded run / sim").RightAligned()).AddColumn(new TableColumn("MiB resident run / sim").RightAligned())
            .AddColumn("equal");
        foreach (var r in rows)
            table.AddRow(Markup.Escape(r.Run), r.Config.OffloadRatio.ToString("0.###", CultureInfo.InvariantCulture), $"{r.Rank} ({r.PipelineRank})",
                $"{r.Measured.Records} / {r.Simulated.Records}", Pair(r.Measured.Recorded, r.Simulated.Recorded),
                Pair(r.Measured.Offloaded, r.Simulated.Offloaded), Pair(r.Measured.Resident, r.Simulated.Resident),
                r.Equal ? "to the byte" : $"no: resident {r.Measured.Resident - r.Simulated.Resident:+#,0;-#,0} B");
        console.Write(table);
        console.MarkupLine($"{rows.Count(r => r.Equal)} of {rows.Count} rank(s) equal to the byte; at alpha 0 nothing offloads and neither side records anything.");
    }

    private static string Pair(double run, double sim) =>
        string.Create(CultureInfo.InvariantCulture, $"{run / MiB:F2} / {sim / MiB:F2}");

    public static string Json(IReadOnlyList<OffloadValidation> rows) =>
        JsonSerializer.Serialize(rows.Select(r => new
        {
            r.Run, r.Model, Alpha = r.Config.OffloadRatio, r.Rank, r.PipelineRank,
            MeasuredRecords = r.Measured.Records, SimulatedRecords = r.Simulated.Records,
            MeasuredSavedBytes = r.Measured.Recorded, SimulatedSavedBytes = r.Simulated.Recorded,
            MeasuredOffloadedBytes = r.Measured.Offloaded, SimulatedOffloadedBytes = r.Simulated.Offloaded,
            MeasuredResidentBytes = r.Measured.Resident, SimulatedResidentBytes = r.Simulated.Resident, r.Equal,
        }), new JsonSerializerOptions { WriteIndented = true });

    public static void WriteCsv(IReadOnlyList<OffloadValidation> rows, string path)
    {
        var c = CultureInfo.InvariantCulture;
        string Bytes(double b) => b.ToString("F0", c);
        var lines = new List<string>
        {
            "run,model,alpha,rank,pipeline_rank,measured_records,simulated_records,measured_saved_bytes,simulated_saved_bytes," +
            "measured_offloaded_bytes,simulated_offloaded_bytes,measured_resident_bytes,simulated_resident_bytes,equal",
        };
        lines.AddRange(rows.Select(r => string.Join(',', r.Run, r.Model, r.Config.OffloadRatio.ToString("R", c), r.Rank.ToString(c), r.PipelineRank.ToString(c),
            r.Measured.Records.ToString(c), r.Simulated.Records.ToString(c), Bytes(r.Measured.Recorded), Bytes(r.Simulated.Recorded),
            Bytes(r.Measured.Offloaded), Bytes(r.Simulated.Offloaded), Bytes(r.Measured.Resident), Bytes(r.Simulated.Resident), r.Equal)));
        File.WriteAllLines(path, lines);
    }
}
