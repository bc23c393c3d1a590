using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// How much of a GPU's memory a training process can fill with tensors. The simulator's peak is what PyTorch allocates
/// (torch.cuda.max_memory_allocated, what papers report); a run fails when the caching allocator cannot reserve a block,
/// and it reserves more than is allocated, with memory outside PyTorch on top.
/// </summary>
public static class MemoryBudget
{
    /// <summary>Device memory outside PyTorch's allocator: the CUDA context (~0.5 GiB on Ampere/Hopper), NCCL's
    /// buffers for the tensor, context, data and pipeline communicators (several MiB per channel and peer each),
    /// and cuBLAS/cuDNN workspaces: about 2 GiB in a hybrid-parallel job.</summary>
    public const double OutsideAllocatorBytes = 2.0 * (1L << 30);

    /// <summary>Reserved over allocated bytes of what is allocated and freed during a step (activations, temporaries) under
    /// PyTorch's default caching allocator: differently sized activations leave cached blocks that do not fit the next
    /// request: 15%, the average GMLake (ASPLOS'24, arXiv 2401.08156) measures for eight LLMs on A100s (up to 33% with
    /// recomputation or offload).</summary>
    public const double AllocatorFragmentation = 0.15;

    /// <summary>
    /// The fragmentation on the step's allocations: none under PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, where a
    /// stream's blocks live in one segment that grows by mapping 2 MiB pages at its end and gives free pages back
    /// (c10/cuda/CUDACachingAllocator.cpp, ExpandableSegment), so freed memory is never stranded in a block too small for
    /// the next request; NeMo's performance scripts launch with it (scripts/performance/executors.py).
    /// </summary>
    public static double Fragmentation(RunDescription c) => c.ExpandableSegments ? 0 : AllocatorFragmentation;

    /// <summary>
    /// What the allocator reserves at the peak <paramref name="m"/>: the model states as allocated (weights, gradient and
    /// parameter buffers, optimizer states and ZeRO's buckets are allocated once, at start, as whole buffers: Megatron's
    /// ParamAndGradBuffer and the distributed optimizer's shards; each is a block of its own size that stays in use), the
    /// activations and temporaries with <see cref="Fragmentation"/>.
    /// </summary>
    public static double ReservedBytes(MemoryBreakdown m, RunDescription c) =>
        ReservedBytes(m.Weights + m.Gradients + m.Optimizer, m.Activations + m.Buffers, c);

    /// <summary>What the allocator reserves for <paramref name="state"/> bytes of model states and <paramref name="step"/>
    /// bytes of activations and temporaries.</summary>
    public static double ReservedBytes(double state, double step, RunDescription c) => state + step * (1 + Fragmentation(c));

    /// <summary>The most the allocator can reserve on <paramref name="gpu"/>.</summary>
    public static double UsableBytes(GpuSpec gpu) => gpu.MemoryBytes - OutsideAllocatorBytes;

    /// <summary>Whether a reservation of <paramref name="reservedBytes"/> fits.</summary>
    public static bool Fits(double reservedBytes, GpuSpec gpu) => reservedBytes <= UsableBytes(gpu);
}
