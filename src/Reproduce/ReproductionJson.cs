using System.Text.Json;

namespace Harness.Reproduce;

/// <summary>The errors of a reproduction as one JSON object: per table, then overall.</summary>
public static class ReproductionJson
{
    public static string Write(ReproductionSummary s)
    {
        var doc = new
        {
            tables = s.Tables.Select(t => new
            {
                name = t.Experiment.Name,
                held_out = t.Experiment.HeldOut,
                metric = t.Experiment.Metric,
                rows = t.Rows.Count,
                compared = t.Errors.Count,
                mape = t.Errors.Mape,
                max_abs_error = t.Errors.MaxAbs,
                worst_row = t.Errors.Worst,
                fit_decisions_right = t.FitDecisionsRight,
                order_right = t.Order.Right,
                order_violations = t.Order.Violations,
                row_results = t.Rows.Select(r => new
                {
                    label = r.Row.Label,
                    published = r.Published,
                    published_oom = r.Row.Published.Oom,
                    simulated = r.Simulated,
                    error = r.Error,
                    fits = r.Step.Fits,
                    chosen = r.Choice.Length > 0 ? r.Choice : null,
                }),
            }),
            overall = new
            {
                throughput = new { rows = s.Throughput.Count, mape = s.Throughput.Mape, max_abs_error = s.Throughput.MaxAbs, worst_row = s.Throughput.Worst },
                memory = new { points = s.Memory.Count, mape = s.Memory.Mape, max_abs_error = s.Memory.MaxAbs, worst_row = s.Memory.Worst },
                held_out = new { rows = s.HeldOut.Count, mape = s.HeldOut.Mape, max_abs_error = s.HeldOut.MaxAbs, worst_row = s.HeldOut.Worst },
                fit_decisions_right = s.FitDecisionsRight,
                fit_decisions = s.FitDecisions,
                order_right = s.OrderRight,
            },
        };
        return JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true });
    }
}
