using Harness.Megatron;
using CsvHelper;
using Harness.Search;
using Harness.Simulator.Specs;

namespace Harness.Cli.Output;

/// <summary>Every configuration `harness search` evaluated, one CSV row each, fastest first.</summary>
public static partial class SearchCsv
{
    /// <summary>One evaluated configuration; columns in snake_case, like `harness simulate --json`.</summary>
    [CsvRecord]
    public sealed partial record Row(
        [CsvColumn("data_parallel")] int DataParallel,
        [CsvColumn("tensor_parallel")] int TensorParallel,
        [CsvColumn("pipeline_parallel")] int PipelineParallel,
        [CsvColumn("layers_per_virtual_stage")] int? LayersPerVirtualStage,
        [CsvColumn("virtual_stages")] int VirtualStages,
        [CsvColumn("context_parallel")] int ContextParallel,
        [CsvColumn("cp_comm_type")] string ContextParallelComm,
        [CsvColumn("sequence_parallel")] bool SequenceParallel,
        [CsvColumn("micro_batch")] int MicroBatch,
        [CsvColumn("recompute")] string Recompute,
        [CsvColumn("offload_ratio")] double OffloadRatio,
        [CsvColumn("zero_stage")] int ZeroStage,
        [CsvColumn("fsdp_strategy")] string? FsdpStrategy,
        [CsvColumn("sync_factor")] double SyncFactor,
        [CsvColumn("step_time_s")] double StepTimeS,
        [CsvColumn("tokens_per_s_per_gpu")] double TokensPerSPerGpu,
        [CsvColumn("mfu")] double Mfu,
        [CsvColumn("reserved_memory_bytes")] long PeakMemoryBytes,
        [CsvColumn("fits")] bool Fits,
        [CsvColumn("top")] bool Top,
        [CsvColumn("pareto")] bool Pareto,
        [CsvColumn("biggest_cost")] string BiggestCost,
        [CsvColumn("megatron_args")] string MegatronArgs);

    public static void Write(string path, SearchResult result)
    {
        var top = result.Top.Select(e => e.Config).ToHashSet();
        var front = result.ParetoFront.Select(e => e.Config).ToHashSet();
        var m = result.Space.Model;
        var rows = result.Evaluations.Order(Comparer<Evaluated>.Create(Evaluated.Rank)).Select(e =>
        {
            var c = e.Config;
            return new Row(c.DataParallel, c.TensorParallel, c.PipelineParallel, c.LayersPerVirtualStage, c.VirtualStages(m),
                c.ContextParallel, RunDescriptionFlags.CommTypeName(c.ContextParallelComm), c.SequenceParallel, c.MicroBatch, RecomputeChoices.Label(c.RecomputeOrNone), c.OffloadRatio,
                c.ZeroStage, c.Fsdp is null ? null : MegatronFsdp.StrategyName(c.ZeroStage), c.SyncFactor, e.Cost.StepTimeSeconds, e.Cost.TokensPerSecondPerGpu, e.Cost.Mfu,
                e.Cost.PeakMemoryBytes, e.Fits, top.Contains(c), front.Contains(c), e.Cost.BiggestCost, string.Join(' ', RunDescriptionFlags.Format(c)));
        });
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        using var writer = new StreamWriter(path);
        using var csv = CsvWriter.Create(writer, null, leaveOpen: false);
        csv.WriteRecords(rows);
    }
}
