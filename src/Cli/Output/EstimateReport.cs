using Harness.Megatron;
using Harness.Cli.Arguments;
using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using Spectre.Console;

namespace Harness.Cli.Output;

/// <summary>`harness simulate`'s readable report: headline numbers, where the time goes, where the memory goes.</summary>
public static class EstimateReport
{
    private const double GiB = 1024.0 * 1024 * 1024;

    public static void Print(SimulationInput input, StepEstimate e, IReadOnlyList<string> ignored)
    {
        var (m, cl, c) = (input.Model, input.Cluster, input.Config);
        var console = Terminal.Out;
        console.MarkupLine($"[bold]{Markup.Escape(m.Name)}[/] (L{m.NumLayers} h{m.HiddenSize} a{m.NumAttentionHeads} s{m.SeqLength}) on "
            + $"{cl.WorldSize} x {Markup.Escape(cl.Gpu.Name)} ({cl.GpusPerNode} per node)");
        console.MarkupLine($"dp {c.DataParallel} tp {c.TensorParallel} pp {c.PipelineParallel}"
            + (c.PipelineStagesDiffer ? $" (layers {string.Join(", ", c.LayersPerStage(m))})" : "")
            + $" v {c.VirtualStages(m)} cp {c.ContextParallel}{(c.ContextParallel > 1 ? $" ({RunDescriptionFlags.CommTypeName(c.ContextParallelComm)})" : "")}"
            + $" sp {(c.SequenceParallel ? "on" : "off")}, {c.Precision.ToString().ToLowerInvariant()}, micro-batch {c.MicroBatch} x {c.NumMicroBatches}, global batch {c.GlobalBatch}");
        console.MarkupLine($"attention {Markup.Escape(Attention(c, cl.Gpu))}");
        console.WriteLine();
        console.MarkupLine($"step time            [bold]{e.StepTimeSeconds:F3} s[/]");
        console.MarkupLine($"tokens/s per GPU     [bold]{e.TokensPerSecondPerGpu:F0}[/]");
        console.MarkupLine($"model TFLOP/s per GPU {e.ModelTflopsPerGpu:F1}   MFU [bold]{e.Mfu:P1}[/]   HFU {e.Hfu:P1}");
        string fits = e.Fits ? "[green]fits[/]" : "[red]does not fit[/]";
        double usable = MemoryBudget.UsableBytes(cl.Gpu);
        console.MarkupLine($"peak memory per GPU  [bold]{e.PeakMemoryBytes / GiB:F1} GiB[/] allocated (stage {e.PeakStage}), {e.ReservedBytes / GiB:F1} GiB reserved");
        console.MarkupLine($"                     {fits}: {usable / GiB:F1} of {e.GpuMemoryBytes / GiB:F1} GiB usable by the allocator");
        console.WriteLine();

        var time = new Table().Title($"time on the critical stage ({e.CriticalStage})").AddColumns("part", "seconds", "share");
        var t = e.Time;
        foreach (var (name, v) in t.Parts)
            time.AddRow(name, v.ToString("F3"), (v / e.StepTimeSeconds).ToString("P1"));
        console.Write(time);

        var memory = new Table().Title("memory per GPU by pipeline stage (GiB)")
            .AddColumns("stage", "weights", "gradients", "optimizer", "activations", "buffers", "total");
        foreach (var s in e.Stages)
        {
            var mm = s.Memory;
            memory.AddRow(s.Stage.ToString(), G(mm.Weights), G(mm.Gradients), G(mm.Optimizer), G(mm.Activations), G(mm.Buffers),
                s.Stage == e.PeakStage ? $"[bold]{G(mm.Total)}[/]" : G(mm.Total));
        }
        console.Write(memory);
        if (ignored.Count > 0)
            console.MarkupLine($"Megatron-LM settings accepted (they do not change the estimate): {Markup.Escape(string.Join(" ", ignored))}");
    }

    /// <summary>The attention kernel costed: the backend asked for, and for auto the one it resolves to on this GPU.</summary>
    private static string Attention(RunDescription c, GpuSpec gpu)
    {
        static string Kernel(AttentionBackend b) => b switch
        {
            AttentionBackend.Flash => "flash (FlashAttention-2)",
            AttentionBackend.Fused => "fused (cuDNN)",
            _ => $"{AttentionKernels.Name(b)} (score matrix in memory)",
        };
        return c.AttentionBackend == AttentionBackend.Auto ? $"auto: {Kernel(AttentionKernels.Resolve(c, gpu))}" : Kernel(c.AttentionBackend);
    }

    private static string G(double bytes) => (bytes / GiB).ToString("F2");
}
