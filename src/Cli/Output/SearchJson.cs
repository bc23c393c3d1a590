using Harness.Megatron;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harness.Cli.Arguments;
using Harness.Search;
using Harness.Simulator;

namespace Harness.Cli.Output;

/// <summary>
/// `harness search --json`: the top K, each with the fields of `harness simulate --json` (re-estimated with the
/// full breakdown) and, in "config", the rest of the configuration and its Megatron arguments, with the command lines that
/// simulate and run it; plus the counts.
/// </summary>
public static class SearchJson
{
    /// <param name="args">The search's own arguments, for each configuration's simulate and run command lines.</param>
    public static string Write(SearchResult r, IReadOnlyList<string> ignored, IReadOnlyList<string> args)
    {
        var top = new JsonArray();
        int rank = 0;
        foreach (var e in r.Top)
        {
            var input = new SimulationInput(r.Space.Model, r.Space.Cluster, e.Config);
            var node = JsonNode.Parse(EstimateJson.Write(input, Estimator.Estimate(input.Model, input.Cluster, input.Config), ignored))!.AsObject();
            node.Insert(0, "rank", ++rank);
            node["pareto"] = r.ParetoFront.Any(f => f.Config == e.Config);
            node["simulate_command"] = ConfigurationCommands.Simulate(args, e.Config);
            node["run_command"] = ConfigurationCommands.Run(args, r.Space.Cluster, e.Config);
            top.Add(node);
        }
        var counts = r.Counts;
        var result = new JsonObject
        {
            ["top"] = top,
            ["search"] = new JsonObject
            {
                ["enumerated"] = counts.Enumerated,
                ["layouts"] = counts.Layouts,
                ["evaluated"] = counts.Evaluated,
                ["pruned"] = new JsonObject(counts.Pruned.Select(kv => KeyValuePair.Create(kv.Key.ToString(), (JsonNode?)kv.Value))),
                ["bound_violations"] = counts.BoundViolations,
                ["wall_time_s"] = counts.WallTime.TotalSeconds,
                ["configs_per_s"] = counts.ConfigsPerSecond,
                ["pareto_front_size"] = r.ParetoFront.Count,
                ["memory_limit_bytes"] = r.Space.MemoryLimitBytes,
            },
        };
        return result.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
