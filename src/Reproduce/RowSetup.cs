using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>
/// A row made concrete: the model, the cluster and the Megatron configuration it ran, with the table's
/// defaults and the row's system (what it overlaps) applied. Knobs the paper leaves out are filled in by
/// <see cref="Reproducer"/> from <see cref="Experiment.Choose"/>.
/// </summary>
public sealed record RowSetup(ModelSpec Model, ClusterSpec Cluster, RunDescription Config, string SystemName, MegatronArgs Args)
{
    /// <summary>Resolves row <paramref name="row"/> of <paramref name="e"/>.</summary>
    public static RowSetup Resolve(Experiment e, ExperimentRow row)
    {
        string where = $"{e.Name}, row '{row.Label}'";
        var model = ResolveModel(e.Model?.With(row.Model) ?? row.Model, where);

        string gpuName = row.Gpu ?? e.Cluster.Gpu;
        if (!GpuPresets.All.TryGetValue(gpuName, out var gpu))
            throw new ExperimentException($"{where}: GPU '{gpuName}' is not a preset ({string.Join(", ", GpuPresets.All.Keys)}).");
        int gpus = row.Gpus ?? e.Cluster.Gpus
            ?? throw new ExperimentException($"{where}: no world size (set 'gpus' on the row or in 'cluster').");
        var cluster = new ClusterSpec(gpu, gpus, e.Cluster.GpusPerNode);

        string systemName = row.System ?? e.System ?? "";
        SystemProfile? system = null;
        if (systemName.Length > 0 && (e.Systems is null || !e.Systems.TryGetValue(systemName, out system)))
            throw new ExperimentException($"{where}: system '{systemName}' is not described under 'systems'.");

        var args = (e.Defaults ?? new MegatronArgs()).Over(row.Args);
        return new RowSetup(model, cluster, ToConfig(args, system, gpus, where), systemName, args);
    }

    private static ModelSpec ResolveModel(ModelRef? r, string where)
    {
        if (r?.Preset is not { } preset)
            throw new ExperimentException($"{where}: no model preset (set model.preset on the row or the table).");
        if (!ModelPresets.All.TryGetValue(preset, out var m))
            throw new ExperimentException($"{where}: model preset '{preset}' is not one of {string.Join(", ", ModelPresets.All.Keys)}.");
        m = m with
        {
            Name = r.Name ?? m.Name,
            NumLayers = r.NumLayers ?? m.NumLayers,
            HiddenSize = r.HiddenSize ?? m.HiddenSize,
            NumAttentionHeads = r.NumAttentionHeads ?? m.NumAttentionHeads,
            // Multi-head attention stays multi-head when only the head count is overridden.
            NumQueryGroups = r.NumQueryGroups ?? (m.IsGroupedQuery ? m.NumQueryGroups : r.NumAttentionHeads ?? m.NumQueryGroups),
            FfnHiddenSize = r.FfnHiddenSize ?? m.FfnHiddenSize,
            VocabSize = r.VocabSize ?? m.VocabSize,
            SeqLength = r.SeqLength ?? m.SeqLength,
        };
        var errors = m.Validate();
        if (errors.Count > 0) throw new ExperimentException($"{where}: {errors[0]}");
        return m;
    }

    private static RunDescription ToConfig(MegatronArgs a, SystemProfile? system, int gpus, string where)
    {
        int t = a.TensorModelParallelSize ?? 1, p = a.PipelineModelParallelSize ?? 1, cp = a.ContextParallelSize ?? 1;
        if (t < 1 || p < 1 || cp < 1 || gpus % (t * p * cp) != 0)
            throw new ExperimentException($"{where}: {gpus} GPUs are not divisible by tensor {t} x pipeline {p} x context {cp}.");
        return new RunDescription(
            DataParallel: gpus / (t * p * cp),
            TensorParallel: t,
            PipelineParallel: p,
            LayersPerVirtualStage: a.NumLayersPerVirtualPipelineStage,
            ContextParallel: cp,
            SequenceParallel: a.SequenceParallel ?? false,
            MicroBatch: a.MicroBatchSize ?? 1,
            GlobalBatch: a.GlobalBatchSize ?? throw new ExperimentException($"{where}: no global-batch-size."),
            Recompute: ToRecompute(a, where),
            OffloadRatio: a.KaimmOffloadActivationRatio ?? 0,
            ZeroStage: a.UseDistributedOptimizer == true ? 1 : 0,
            Overlap: ToOverlap(system, a),
            Precision: a.Fp16 == true ? Precision.Fp16 : a.Bf16 == false ? Precision.Fp32 : Precision.Bf16,
            FlashAttention: a.UseFlashAttn ?? false,
            GradientsInFp32: a.AccumulateAllreduceGradsInFp32 ?? true,
            FusedNorm: system?.FusedNorm ?? true,
            FusedElementwise: system?.FusedElementwise ?? true,
            GradientAccumulationFusion: system?.GradientAccumulationFusion ?? true,
            MaxSplitSizeMb: system?.MaxSplitSizeMb);
    }

    /// <summary>The system's overlaps (null: the simulator's defaults), with the row's own Megatron-Kwai
    /// --no-context-parallel-comm-overlap-gemm (its launch script's argument for grouped-query attention).</summary>
    private static OverlapSpec? ToOverlap(SystemProfile? system, MegatronArgs a)
    {
        var overlap = system is null ? null : new OverlapSpec(
            TensorParallelComm: system.OverlapTensorParallelComm,
            GradientReduce: system.OverlapGradReduce,
            PipelineP2p: system.OverlapP2pCommunication,
            TensorParallelBackwardAsync: system.AsyncTensorParallelAllreduce,
            TensorParallelForwardReduceScatter: system.OverlapForwardReduceScatter,
            DeviceMaxConnections: system.CudaDeviceMaxConnections);
        return a.NoContextParallelCommOverlapGemm == true ? (overlap ?? OverlapSpec.Default) with { ContextParallelComm = false } : overlap;
    }

    private static RecomputeSpec ToRecompute(MegatronArgs a, string where)
    {
        var granularity = a.RecomputeGranularity switch
        {
            null => RecomputeGranularity.None,
            "full" => RecomputeGranularity.Full,
            "selective" => RecomputeGranularity.Selective,
            var g => throw new ExperimentException($"{where}: recompute-granularity '{g}' is not 'full' or 'selective'."),
        };
        var method = a.RecomputeMethod switch
        {
            null or "uniform" => RecomputeMethod.Uniform,
            "block" => RecomputeMethod.Block,
            var m => throw new ExperimentException($"{where}: recompute-method '{m}' is not 'uniform' or 'block'."),
        };
        return new RecomputeSpec(granularity, method, a.RecomputeNumLayers ?? 1,
            NormOutputs: a.KaimmRecomputeNorm ?? false, MlpActivation: a.KaimmRecomputeMlpActivationFunc ?? false);
    }
}
