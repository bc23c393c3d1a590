using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>
/// A row made concrete: the model, the cluster and the Megatron configuration it ran, with the table's
/// defaults and the row's system (what it overlaps) applied. Knobs the paper leaves out are filled in by
/// <see cref="Reproducer"/> from <see cref="Experiment.Choose"/>.
/// </summary>
public sealed record RowSetup(ModelSpec Model, ClusterSpec Cluster, RunDescription Config, string SystemName, ExperimentArgs Args)
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

        var args = (e.Defaults ?? ExperimentArgs.None).Over(row.Args);
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

    /// <summary>The flags whose fields a system's profile sets (its overlaps, fusions and launch environment).</summary>
    private static readonly string[] SystemFlags =
    [
        "tp-comm-overlap", "overlap-sp-ag", "overlap-sp-rs", "overlap-grad-reduce", "no-overlap-p2p-communication", "overlap-p2p-communication",
        "no-async-tensor-model-parallel-allreduce", "no-norm-fusion", "no-masked-softmax-fusion", "no-bias-gelu-fusion", "no-bias-dropout-fusion",
        "no-bias-swiglu-fusion", "no-scatter-gather-tensors-in-pipeline", "no-gradient-accumulation-fusion", "max-split-size-mb", "cuda-device-max-connections",
    ];

    /// <summary>The row's arguments read by the command line's codec, on the implementation its system describes.</summary>
    private static RunDescription ToConfig(ExperimentArgs a, SystemProfile? system, int gpus, string where)
    {
        var cl = CommandLine.Parse(a.ToCommandLine(), RunDescriptionFlags.Flags, FlagReader.Estimate);
        if (!a.Sets("global-batch-size")) cl.Errors.Add("no global-batch-size.");
        var c = RunDescriptionFlags.Read(cl, gpus);
        if (cl.Errors.Count > 0) throw new ExperimentException($"{where}: {cl.Errors[0]}");
        if (system is null) return c;
        if (SystemFlags.FirstOrDefault(a.Sets) is string owned)
            throw new ExperimentException($"{where}: sets {owned}, which its system also sets; say it in one place (the system, or the arguments without a system).");
        var o = c.OverlapOrDefault;
        return c with
        {
            // The system's overlaps, keeping the row's own Megatron-Kwai --no-context-parallel-comm-overlap-gemm (its
            // launch script's argument for grouped-query attention).
            Overlap = o with
            {
                TensorParallelComm = system.OverlapTensorParallelComm,
                GradientReduce = system.OverlapGradReduce,
                PipelineP2p = system.OverlapP2pCommunication,
                TensorParallelBackwardAsync = system.AsyncTensorParallelAllreduce,
                TensorParallelForwardReduceScatter = system.OverlapForwardReduceScatter,
                DeviceMaxConnections = system.CudaDeviceMaxConnections,
            },
            FusedNorm = system.FusedNorm,
            FusedElementwise = system.FusedElementwise,
            FusedSwiGlu = system.FusedSwiGlu,
            PipelineScatterGather = system.PipelineScatterGather,
            GradientAccumulationFusion = system.GradientAccumulationFusion,
            MaxSplitSizeMb = system.MaxSplitSizeMb,
        };
    }
}
