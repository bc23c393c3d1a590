using Harness.Search;
using Harness.Megatron;
using System.Text;
using System.Text.Json;
using Harness.Cli.Arguments;
using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Cli.Output;

/// <summary>`harness simulate --json`: one object, snake_case keys, SI units (seconds, bytes).</summary>
public static class EstimateJson
{
    public static string Write(SimulationInput input, StepEstimate e, IReadOnlyList<string> ignored)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            var (m, cl, c) = (input.Model, input.Cluster, input.Config);
            w.WriteStartObject();
            w.WriteNumber("step_time_s", e.StepTimeSeconds);
            w.WriteNumber("tokens_per_s_per_gpu", e.TokensPerSecondPerGpu);
            w.WriteNumber("model_tflops_per_gpu", e.ModelTflopsPerGpu);
            w.WriteNumber("mfu", e.Mfu);
            w.WriteNumber("hfu", e.Hfu);
            w.WriteNumber("peak_memory_bytes", e.PeakMemoryBytes);
            w.WriteNumber("gpu_memory_bytes", e.GpuMemoryBytes);
            w.WriteNumber("reserved_memory_bytes", e.ReservedBytes);
            w.WriteNumber("usable_memory_bytes", Math.Floor(MemoryBudget.UsableBytes(cl.Gpu)));
            w.WriteBoolean("fits", e.Fits);
            w.WriteNumber("bubble_fraction", e.BubbleFraction);
            w.WriteNumber("critical_stage", e.CriticalStage);
            w.WriteNumber("peak_memory_stage", e.PeakStage);

            w.WriteStartObject("breakdown");
            w.WriteStartObject("time_s");
            var t = e.Time;
            foreach (var (name, seconds) in t.Parts) w.WriteNumber(name, seconds);
            w.WriteEndObject();
            w.WritePropertyName("memory_bytes");
            WriteMemory(w, e.Memory);
            w.WriteStartArray("stages");
            foreach (var s in e.Stages)
            {
                w.WriteStartObject();
                w.WriteNumber("stage", s.Stage);
                w.WritePropertyName("memory_bytes");
                WriteMemory(w, s.Memory);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();

            w.WriteStartObject("config");
            w.WriteString("model", m.Name);
            w.WriteString("gpu", cl.Gpu.Name);
            w.WriteNumber("gpus", cl.WorldSize);
            w.WriteNumber("gpus_per_node", cl.GpusPerNode);
            w.WriteNumber("data_parallel", c.DataParallel);
            w.WriteNumber("tensor_parallel", c.TensorParallel);
            w.WriteNumber("pipeline_parallel", c.PipelineParallel);
            w.WriteNumber("virtual_stages", c.VirtualStages(m));
            w.WriteStartArray("layers_per_stage");
            foreach (int layers in c.LayersPerStage(m)) w.WriteNumberValue(layers);
            w.WriteEndArray();
            if (c.LayersPerVirtualStage is int l) w.WriteNumber("layers_per_virtual_stage", l);
            else w.WriteNull("layers_per_virtual_stage");
            w.WriteNumber("context_parallel", c.ContextParallel);
            w.WriteString("cp_comm_type", RunDescriptionFlags.CommTypeName(c.ContextParallelComm));
            w.WriteString("attention_backend", AttentionKernels.Name(c.AttentionBackend));
            w.WriteString("attention_kernel", AttentionKernels.Name(AttentionKernels.Resolve(c, cl.Gpu)));
            w.WriteBoolean("sequence_parallel", c.SequenceParallel);
            w.WriteNumber("micro_batch", c.MicroBatch);
            w.WriteNumber("global_batch", c.GlobalBatch);
            w.WriteNumber("micro_batches", c.NumMicroBatches);
            w.WriteNumber("seq_length", m.SeqLength);
            w.WriteString("recompute", RecomputeChoices.Label(c.RecomputeOrNone));
            w.WriteNumber("offload_ratio", c.OffloadRatio);
            w.WriteNumber("zero_stage", c.ZeroStage);
            // Megatron-FSDP's strategy (the stage's sharding as it runs it), null under DeepSpeed's stages.
            if (c.Fsdp is null) w.WriteNull("fsdp_strategy");
            else w.WriteString("fsdp_strategy", MegatronFsdp.StrategyName(c.ZeroStage));
            w.WriteNumber("sync_factor", c.SyncFactor);
            w.WriteString("precision", c.Precision.ToString().ToLowerInvariant());
            w.WriteBoolean("gradients_in_fp32", c.GradientsInFp32);
            w.WriteBoolean("expandable_segments", c.ExpandableSegments);
            w.WriteBoolean("fused_norm", c.FusedNorm);
            w.WriteBoolean("fused_elementwise", c.FusedElementwise);
            w.WriteBoolean("gradient_accumulation_fusion", c.GradientAccumulationFusion);
            w.WriteBoolean("async_tensor_parallel_allreduce", c.OverlapOrDefault.TensorParallelBackwardAsync);
            w.WriteBoolean("context_parallel_comm_overlap", c.OverlapOrDefault.ContextParallelComm);
            // The whole run description, as the flags that give it back (every field that differs from Megatron's default).
            w.WriteString("megatron_args", string.Join(' ', RunDescriptionFlags.Format(c)));
            w.WriteEndObject();

            w.WriteStartArray("ignored_flags");
            foreach (var f in ignored) w.WriteStringValue(f);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private static void WriteMemory(Utf8JsonWriter w, MemoryBreakdown m)
    {
        w.WriteStartObject();
        w.WriteNumber("weights", Math.Round(m.Weights));
        w.WriteNumber("gradients", Math.Round(m.Gradients));
        w.WriteNumber("optimizer", Math.Round(m.Optimizer));
        w.WriteNumber("activations", Math.Round(m.Activations));
        w.WriteNumber("buffers", Math.Round(m.Buffers));
        w.WriteNumber("total", Math.Round(m.Total));
        w.WriteEndObject();
    }
}
