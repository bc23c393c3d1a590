using System.Globalization;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>A configuration in the papers' short notation (Megatron-Kwai's tables: d, t, c, p, l, ...).</summary>
public static class PaperNotation
{
    private static string F(double x) => x.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>The papers' short notation: "d8 t4 c1 p8 l2 mb1 sp kwai a0.63 z1" (under Megatron-FSDP "fsdp3", its strategy's
    /// stage, in place of ZeRO's "z3"); a context-parallel exchange other than
    /// Megatron's default ring follows c as Megatron's --cp-comm-type word ("c4:a2a"; "c8:a2a+p2p(4x2)" with the all-to-all
    /// and ring sizes); uneven stages add "first7 last7" (the layers of the first and last stages), the embedding or loss
    /// counted as a layer "E" or "L" (Megatron's layout letters).</summary>
    public static string Short(RunDescription c)
    {
        string comm = c.ContextParallel > 1 && c.ContextParallelComm != ContextParallelCommType.P2p
            ? ":" + RunDescriptionFlags.CommTypeName(c.ContextParallelComm)
              + (c.HierarchicalAllToAllSize is int a2a ? $"({a2a}x{c.ContextParallel / Math.Max(1, a2a)})" : "") : "";
        string l = (c.LayersPerVirtualStage is int n ? $" l{n}" : "")
                   + (c.LayersInFirstPipelineStage is int first ? $" first{first}" : "") + (c.LayersInLastPipelineStage is int last ? $" last{last}" : "")
                   + (c.AccountForEmbeddingInPipelineSplit ? " E" : "") + (c.AccountForLossInPipelineSplit ? " L" : "");
        string sp = c.SequenceParallel ? " sp" : "";
        string a = c.OffloadRatio > 0 ? $" a{F(c.OffloadRatio)}" : "";
        string p = c.SyncFactor < 1 ? $" sync{F(c.SyncFactor)}" : "";
        return $"d{c.DataParallel} t{c.TensorParallel} c{c.ContextParallel}{comm} p{c.PipelineParallel}{l} mb{c.MicroBatch}{sp} {RecomputeChoices.Label(c.RecomputeOrNone)}{a} {(c.Fsdp is null ? "z" : "fsdp")}{c.ZeroStage}{p}";
    }
}
