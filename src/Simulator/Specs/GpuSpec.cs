namespace Harness.Simulator.Specs;

/// <summary>A point-to-point link as one GPU sees it: bandwidth per direction and per-message latency.</summary>
public sealed record LinkSpec(double BandwidthBytesPerSecond, double LatencySeconds);

/// <summary>
/// One accelerator and the node it usually comes in: dense peak throughput, memory, HBM bandwidth,
/// the per-GPU intra-node (NVLink/NVSwitch) and inter-node (NIC) links, the host link (PCIe) and
/// how many GPUs share a node. Presets in <see cref="GpuPresets"/>; a measured profile may refine one.
/// </summary>
/// <param name="PeakBf16Flops">Dense bf16 tensor-core peak, FLOP/s (no sparsity).</param>
/// <param name="PeakFp16Flops">Dense fp16 tensor-core peak, FLOP/s.</param>
/// <param name="MemoryBytes">HBM capacity as the driver reports it.</param>
/// <param name="HbmBandwidthBytesPerSecond">Peak HBM bandwidth.</param>
/// <param name="HostLinkBytesPerSecond">Host-device bandwidth per direction (PCIe), for offload.</param>
/// <param name="Efficiency">How close kernels get to the peaks above in a training step.</param>
/// <param name="ComputeCapability">An NVIDIA GPU's compute capability as 10·major + minor (70 Volta, 80 Ampere, 90 Hopper),
/// which decides the kernels Transformer Engine can run and picks (<see cref="AttentionKernels.Resolve"/>); null for other
/// accelerators.</param>
public sealed record GpuSpec(
    string Name,
    double PeakBf16Flops,
    double PeakFp16Flops,
    long MemoryBytes,
    double HbmBandwidthBytesPerSecond,
    LinkSpec IntraNode,
    LinkSpec InterNode,
    double HostLinkBytesPerSecond,
    int GpusPerNode,
    EfficiencySpec Efficiency,
    int? ComputeCapability = null)
{
    /// <summary>Dense tensor-core peak for a precision. fp32 training runs on TF32 tensor cores at half the
    /// bf16 rate (A100: 156 vs 312 TFLOP/s; H100 SXM: 494.7 vs 989).</summary>
    public double PeakFlops(Precision precision) => precision switch
    {
        Precision.Bf16 => PeakBf16Flops,
        Precision.Fp16 => PeakFp16Flops,
        _ => PeakBf16Flops / 2,
    };
}

/// <summary>A cluster: <see cref="WorldSize"/> GPUs of one kind, <see cref="GpusPerNode"/> to a node.</summary>
public sealed record ClusterSpec(GpuSpec Gpu, int WorldSize, int GpusPerNode)
{
    /// <summary>A cluster of <paramref name="worldSize"/> GPUs in the preset's usual nodes.</summary>
    public static ClusterSpec Of(GpuSpec gpu, int worldSize) => new(gpu, worldSize, gpu.GpusPerNode);
}
