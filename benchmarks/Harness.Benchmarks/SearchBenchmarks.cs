using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Harness.Search;
using Harness.Simulator.Specs;

namespace Harness.Benchmarks;

/// <summary>
/// `harness search` over the full default space (every layout with every context-parallel exchange and pipeline split,
/// interleaving, SP, micro-batch, recomputation, offload ratio on the 0.05 grid and ZeRO stage; Pareto front within half
/// the best throughput) in bf16, on every core, as README's two examples run it. Targets (issue 12): Llama-175B on 256
/// H800 (s 8192, global batch 256; Megatron-Kwai Table 8) under 2 s, and Llama 3 405B on 16,384 H800 (s 8192, global
/// batch 2048: the Llama 3 paper's 16M-token batch) under 5 s, on the 2-core development machine. The Configs/s column
/// is the space's size over the mean time.
/// </summary>
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5)]
[Config(typeof(Columns))]
public class SearchBenchmarks
{
    private static readonly SearchConstraints Bf16 = new() { Implementation = new RunDescription(Precision: Precision.Bf16) };

    public static readonly Dictionary<string, SearchSpace> Spaces = new()
    {
        ["llama-175b/256xh800"] = new(ModelPresets.All["llama-175b"] with { SeqLength = 8192 },
            ClusterSpec.Of(GpuPresets.All["h800"], 256), 256, Bf16),
        ["llama3-405b/16384xh800"] = new(ModelPresets.All["llama3-405b"] with { SeqLength = 8192 },
            ClusterSpec.Of(GpuPresets.All["h800"], 16384), 2048, Bf16),
    };

    [Params("llama-175b/256xh800", "llama3-405b/16384xh800")]
    public string Case { get; set; } = "";

    [Benchmark]
    public SearchResult Search() =>
        new Searcher(EstimatorCostModel.Instance, new SearchOptions { KeepEvaluations = false }).Run(Spaces[Case]);

    private sealed class Columns : ManualConfig
    {
        public Columns() => AddColumn(new ConfigsPerSecond());
    }

    /// <summary>Valid configurations in the case's space per second of mean search time.</summary>
    private sealed class ConfigsPerSecond : IColumn
    {
        public string Id => nameof(ConfigsPerSecond);
        public string ColumnName => "Configs/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "valid configurations of the space per second of mean wall time";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var stats = summary[benchmarkCase]?.ResultStatistics;
            if (stats is null) return "-";
            var space = Spaces[(string)benchmarkCase.Parameters["Case"]];
            var e = new SpaceEnumerator(space);
            long configs = e.Layouts().Sum(e.LeafCount);
            return (configs / (stats.Mean / 1e9)).ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
        }
    }
}
