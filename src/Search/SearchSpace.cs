using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>
/// What the user narrows. Every list is "only these values"; null means the whole valid range.
/// Names follow Megatron's arguments (the CLI flag that sets each is given).
/// </summary>
public sealed record SearchConstraints
{
    /// <summary>--tensor-model-parallel-size 2,4,8</summary>
    public IReadOnlyList<int>? TensorParallel { get; init; }
    /// <summary>--pipeline-model-parallel-size</summary>
    public IReadOnlyList<int>? PipelineParallel { get; init; }
    /// <summary>--context-parallel-size</summary>
    public IReadOnlyList<int>? ContextParallel { get; init; }
    /// <summary>--cp-comm-type p2p,allgather,a2a,a2a+p2p: the context-parallel exchanges tried where c > 1 (null: all four; a2a+p2p
    /// with every all-to-all size that applies).</summary>
    public IReadOnlyList<ContextParallelCommType>? ContextParallelComm { get; init; }
    /// <summary>--data-parallel-size</summary>
    public IReadOnlyList<int>? DataParallel { get; init; }
    /// <summary>--micro-batch-size</summary>
    public IReadOnlyList<int>? MicroBatch { get; init; }
    /// <summary>--num-layers-per-virtual-pipeline-stage; 0 stands for "no interleaving".</summary>
    public IReadOnlyList<int>? LayersPerVirtualStage { get; init; }
    /// <summary>--decoder-first-pipeline-num-layers: only these layers on the first stage, 0 for the flag not given; null:
    /// the splits <see cref="PipelineSplits"/> chooses.</summary>
    public IReadOnlyList<int>? LayersInFirstPipelineStage { get; init; }
    /// <summary>--decoder-last-pipeline-num-layers, likewise for the last stage.</summary>
    public IReadOnlyList<int>? LayersInLastPipelineStage { get; init; }
    /// <summary>--account-for-embedding-in-pipeline-split: only splits that count the embedding as a layer.</summary>
    public bool AccountForEmbeddingInPipelineSplit { get; init; }
    /// <summary>--account-for-loss-in-pipeline-split: only splits that count the loss as a layer.</summary>
    public bool AccountForLossInPipelineSplit { get; init; }
    /// <summary>--sequence-parallel on/off.</summary>
    public IReadOnlyList<bool>? SequenceParallel { get; init; }
    /// <summary>--recompute none,selective,full,kwai-norm,kwai-act,kwai,... (see <see cref="RecomputeChoices"/>).</summary>
    public IReadOnlyList<RecomputeKind>? Recompute { get; init; }
    /// <summary>--recompute-method uniform,block (full recomputation only).</summary>
    public IReadOnlyList<RecomputeMethod>? RecomputeMethod { get; init; }
    /// <summary>--recompute-num-layers (full recomputation only).</summary>
    public IReadOnlyList<int>? RecomputeNumLayers { get; init; }
    /// <summary>Explicit offload ratios (--offload-ratio 0,0.5); otherwise the grid 0, step, 2·step, ..., 1.</summary>
    public IReadOnlyList<double>? OffloadRatios { get; init; }
    /// <summary>Grid step of the offload ratio (--offload-step, default 0.05).</summary>
    public double OffloadStep { get; init; } = 0.05;
    /// <summary>--zero-stage 0,1,2,3 (--use-distributed-optimizer is stage 1 only).</summary>
    public IReadOnlyList<int>? ZeroStage { get; init; }
    /// <summary>The implementation every configuration runs on: precision, kernels, what it overlaps, the launch environment
    /// (its layout fields are ignored: the search sets them); by default Megatron-LM's, as <see cref="RunDescription"/> defines it.</summary>
    public RunDescription Implementation { get; init; } = new();
    /// <summary>--sync-factor: CAAT-Net's p values to try (default only 1.0).</summary>
    public IReadOnlyList<double> SyncFactors { get; init; } = [1.0];
    /// <summary>--memory-limit: a config fits when what the allocator reserves at its peak is at most this; null = what the
    /// allocator can reserve on the GPU (<see cref="MemoryBudget.UsableBytes"/>).</summary>
    public long? MemoryLimitBytes { get; init; }
    /// <summary>--max-tp-per-node: keep each tensor-parallel group inside one node.</summary>
    public bool TensorParallelWithinNode { get; init; }

    /// <summary>The offload ratios the space holds: the explicit list, or the grid (rounded to the step's decimals).</summary>
    public IReadOnlyList<double> OffloadGrid()
    {
        if (OffloadRatios is not null) return OffloadRatios.Distinct().Order().ToArray();
        int n = (int)Math.Round(1.0 / OffloadStep);
        return Enumerable.Range(0, n + 1).Select(i => Math.Min(1.0, Math.Round(i * OffloadStep, 10))).Distinct().ToArray();
    }

    /// <summary>Every reason these constraints are malformed, in words (values the search could never use).</summary>
    public IReadOnlyList<string> Validate()
    {
        var e = new List<string>();
        void Positive(string flag, IReadOnlyList<int>? values)
        {
            foreach (var v in values ?? [])
                if (v < 1) e.Add($"{flag} {v} is not a positive integer.");
        }
        Positive("--tensor-model-parallel-size", TensorParallel);
        Positive("--pipeline-model-parallel-size", PipelineParallel);
        Positive("--context-parallel-size", ContextParallel);
        Positive("--data-parallel-size", DataParallel);
        Positive("--micro-batch-size", MicroBatch);
        Positive("--recompute-num-layers", RecomputeNumLayers);
        foreach (var (flag, values) in new[] { ("--decoder-first-pipeline-num-layers", LayersInFirstPipelineStage), ("--decoder-last-pipeline-num-layers", LayersInLastPipelineStage) })
            foreach (var n in values ?? [])
                if (n < 0) e.Add($"{flag} {n} is negative; use a positive number of layers or 'none'.");
        foreach (var l in LayersPerVirtualStage ?? [])
            if (l < 0) e.Add($"--num-layers-per-virtual-pipeline-stage {l} is negative; use a positive integer or 'none'.");
        if (OffloadRatios is null && (OffloadStep is <= 0 or > 1 || double.IsNaN(OffloadStep)))
            e.Add($"--offload-step {FlagText.Of(OffloadStep)} must be in (0, 1].");
        foreach (var a in OffloadRatios ?? [])
            if (a is < 0 or > 1 || double.IsNaN(a)) e.Add($"--offload-ratio {FlagText.Of(a)} is outside [0, 1].");
        foreach (var z in ZeroStage ?? [])
            if (z is < 0 or > 3) e.Add($"--zero-stage {z} is not one of 0, 1, 2, 3.");
        if (SyncFactors.Count == 0) e.Add("--sync-factor needs at least one value.");
        foreach (var p in SyncFactors)
            if (p is < 0 or > 1 || double.IsNaN(p)) e.Add($"--sync-factor {FlagText.Of(p)} is outside [0, 1].");
        if (MemoryLimitBytes is <= 0) e.Add($"--memory-limit {MemoryLimitBytes} bytes must be positive.");
        return e;
    }
}

/// <summary>One search problem: the model (its sequence length included), the cluster, the global batch and the constraints.</summary>
public sealed record SearchSpace(ModelSpec Model, ClusterSpec Cluster, int GlobalBatch, SearchConstraints Constraints)
{
    /// <summary>The peak memory a config must stay within: the user's limit, or what the simulator deems usable on the
    /// GPU (its memory less what lives outside PyTorch's allocator and the allocator's fragmentation).</summary>
    public long MemoryLimitBytes => Constraints.MemoryLimitBytes ?? (long)Math.Floor(MemoryBudget.UsableBytes(Cluster.Gpu));
}
