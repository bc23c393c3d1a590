namespace Harness.Simulator;

/// <summary>
/// Where the step time goes, on the pipeline rank that finishes last. The parts add up to the step time.
/// </summary>
/// <param name="Compute">Forward and backward of layers, embedding, output layer and loss (model work).</param>
/// <param name="Recompute">Forward work repeated in backward by recomputation.</param>
/// <param name="TensorParallelComm">Tensor-parallel collectives not hidden behind GEMMs.</param>
/// <param name="ContextParallelComm">Context-parallel exchanges (ring, all-gather, Ulysses' all-to-alls) not hidden behind attention.</param>
/// <param name="PipelineComm">Time the rank waited on its own p2p sends (when they do not overlap).</param>
/// <param name="DataParallelComm">Gradient reduction not hidden behind backward, and the weight all-gather; with ZeRO 2 and
/// 3, every micro-batch's gradient reduce-scatters and ZeRO 3's weight all-gathers not hidden behind compute.</param>
/// <param name="Bubble">Pipeline idle time: waiting for other stages (fill, drain, p2p latency, imbalance).</param>
/// <param name="Optimizer">The optimizer step.</param>
/// <param name="OffloadStall">Ops waiting for Megatron-Kwai's activation offload/reload transfers.</param>
public sealed record TimeBreakdown(
    double Compute, double Recompute, double TensorParallelComm, double ContextParallelComm, double PipelineComm,
    double DataParallelComm, double Bubble, double Optimizer, double OffloadStall)
{
    public double Total => Compute + Recompute + TensorParallelComm + ContextParallelComm + PipelineComm
                           + DataParallelComm + Bubble + Optimizer + OffloadStall;

    /// <summary>The parts by their one name, in every output (tables, JSON, CSV): compute, recompute, tp_comm, cp_comm,
    /// pp_comm, dp_comm, bubble, optimizer, offload_stall.</summary>
    public IEnumerable<(string Name, double Seconds)> Parts =>
    [
        ("compute", Compute), ("recompute", Recompute), ("tp_comm", TensorParallelComm), ("cp_comm", ContextParallelComm),
        ("pp_comm", PipelineComm), ("dp_comm", DataParallelComm), ("bubble", Bubble), ("optimizer", Optimizer),
        ("offload_stall", OffloadStall),
    ];
}

/// <summary>Peak memory of one rank, by kind. <see cref="Activations"/> are those kept for backward at the
/// peak; <see cref="Buffers"/> the temporaries alive at that moment (logits, gradients, recomputation).</summary>
public sealed record MemoryBreakdown(double Weights, double Gradients, double Optimizer, double Activations, double Buffers)
{
    public double Total => Weights + Gradients + Optimizer + Activations + Buffers;
}

/// <summary>Peak memory of every rank of one pipeline stage (all tensor/data/context ranks of a stage are alike).</summary>
public sealed record StageMemory(int Stage, MemoryBreakdown Memory);

/// <summary>
/// The simulator's estimate of one training iteration.
/// </summary>
/// <param name="StepTimeSeconds">One iteration (global batch) end to end.</param>
/// <param name="ModelTflopsPerGpu">Model FLOPs (recomputation not counted) per second per GPU, in TFLOP/s.</param>
/// <param name="Mfu">Model FLOPs utilization: model FLOP/s per GPU over the dense peak.</param>
/// <param name="Hfu">Hardware FLOPs utilization: with recomputed FLOPs.</param>
/// <param name="PeakMemoryBytes">Maximum over ranks of the peak allocated memory.</param>
/// <param name="Fits">Whether every rank's reservation at its peak fits the GPU's memory (<see cref="Costs.MemoryBudget"/>).</param>
/// <param name="BubbleFraction">Pipeline bubble over step time on the critical rank.</param>
/// <param name="CriticalStage">The pipeline stage that finishes last.</param>
/// <param name="PeakStage">The pipeline stage with the highest memory.</param>
public sealed record StepEstimate(
    double StepTimeSeconds,
    double TokensPerSecondPerGpu,
    double ModelTflopsPerGpu,
    double Mfu,
    double Hfu,
    long PeakMemoryBytes,
    long GpuMemoryBytes,
    bool Fits,
    double BubbleFraction,
    int CriticalStage,
    int PeakStage,
    TimeBreakdown Time,
    MemoryBreakdown Memory,
    IReadOnlyList<StageMemory> Stages,
    long ReservedBytes);

/// <summary>What the closed form gives a search to screen with: no breakdown, no allocation. <paramref name="ReservedBytes"/>:
/// what the caching allocator reserves at the peak, which decides <paramref name="Fits"/>.</summary>
public readonly record struct ScreeningEstimate(
    double StepTimeSeconds, double TokensPerSecondPerGpu, double Mfu, double PeakMemoryBytes, double ReservedBytes, bool Fits);

/// <summary>Bounds no configuration's estimate goes below: for pruning before estimating.</summary>
public readonly record struct EstimateBounds(double MinStepTimeSeconds, double MinPeakMemoryBytes);
