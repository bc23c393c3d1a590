using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// How much of a GPU's memory a training process can fill with tensors. The simulator's peak is what PyTorch
/// allocates (torch.cuda.max_memory_allocated, what papers report); a run fails when the allocator cannot
/// reserve a block, and reserved memory exceeds allocated memory, with memory outside PyTorch on top.
/// </summary>
public static class MemoryBudget
{
    /// <summary>Device memory outside PyTorch's allocator: the CUDA context (~0.5 GiB on Ampere/Hopper), NCCL's
    /// buffers for the tensor, context, data and pipeline communicators (several MiB per channel and peer each),
    /// and cuBLAS/cuDNN workspaces: about 2 GiB in a hybrid-parallel job.</summary>
    public const double OutsideAllocatorBytes = 2.0 * (1L << 30);

    /// <summary>Reserved over allocated memory of PyTorch's caching allocator in LLM training: differently
    /// sized activations leave cached blocks that do not fit the next request (10%; fragmentation of 10-30% is
    /// reported for large-model training, e.g. GMLake, ASPLOS'24).</summary>
    public const double AllocatorFragmentation = 0.10;

    /// <summary>The largest allocated peak that still runs on <paramref name="gpu"/>.</summary>
    public static double UsableAllocatedBytes(GpuSpec gpu) =>
        (gpu.MemoryBytes - OutsideAllocatorBytes) / (1 + AllocatorFragmentation);

    /// <summary>Whether an allocated peak of <paramref name="peakBytes"/> fits.</summary>
    public static bool Fits(double peakBytes, GpuSpec gpu) => peakBytes <= UsableAllocatedBytes(gpu);
}
