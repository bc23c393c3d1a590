using System.Globalization;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>A configuration written as Megatron-LM (and Megatron-Kwai, CAAT-Net) launch arguments.</summary>
public static class MegatronArgs
{
    private static string F(double x) => x.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>The parallel part of a Megatron command line; data-parallel size is implied by the world size.</summary>
    public static string Format(RunDescription c)
    {
        var a = new List<string>
        {
            $"--tensor-model-parallel-size {c.TensorParallel}",
            $"--pipeline-model-parallel-size {c.PipelineParallel}",
        };
        if (c.LayersPerVirtualStage is int l) a.Add($"--num-layers-per-virtual-pipeline-stage {l}");
        if (c.ContextParallel > 1) a.Add($"--context-parallel-size {c.ContextParallel}");
        if (c.SequenceParallel) a.Add("--sequence-parallel");
        a.Add($"--micro-batch-size {c.MicroBatch}");
        var r = c.RecomputeOrNone;
        if (r.Granularity == RecomputeGranularity.Selective) a.Add("--recompute-granularity selective");
        if (r.Granularity == RecomputeGranularity.Full)
            a.Add($"--recompute-granularity full --recompute-method {r.Method.ToString().ToLowerInvariant()} --recompute-num-layers {r.NumLayers}");
        if (r.NormOutputs) a.Add("--kaimm-recompute-norm");
        if (r.MlpActivation) a.Add("--kaimm-recompute-mlp-activation-func");
        if (c.OffloadRatio > 0) a.Add($"--offload-ratio {F(c.OffloadRatio)}");
        if (c.ZeroStage == 1) a.Add("--use-distributed-optimizer");
        else if (c.ZeroStage > 1) a.Add($"--zero-stage {c.ZeroStage}");
        if (c.SyncFactor < 1) a.Add($"--sync-factor {F(c.SyncFactor)}");
        return string.Join(' ', a);
    }

    /// <summary>The papers' short notation: "d8 t4 c1 p8 l2 mb1 sp kwai a0.63 z1".</summary>
    public static string Short(RunDescription c)
    {
        string l = c.LayersPerVirtualStage is int n ? $" l{n}" : "";
        string sp = c.SequenceParallel ? " sp" : "";
        string a = c.OffloadRatio > 0 ? $" a{F(c.OffloadRatio)}" : "";
        string p = c.SyncFactor < 1 ? $" sync{F(c.SyncFactor)}" : "";
        return $"d{c.DataParallel} t{c.TensorParallel} c{c.ContextParallel} p{c.PipelineParallel}{l} mb{c.MicroBatch}{sp} {RecomputeChoices.Label(c.RecomputeOrNone)}{a} z{c.ZeroStage}{p}";
    }
}
