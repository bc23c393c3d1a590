using System.Runtime.InteropServices;

namespace Harness.Executor.Native;

/// <summary>libtorch's allocation failure as TorchSharp surfaces it (an ExternalException carrying libtorch's message and
/// native frames): CUDA's "out of memory", or the CPU allocator's "DefaultCPUAllocator: can't allocate memory" (older
/// libtorch: "not enough memory"). A probe that tries a kernel lets it through: memory that ran out says nothing of whether
/// the kernel exists, and the run answers it as the configuration being too big.</summary>
public static class AllocationFailure
{
    public static bool Is(Exception e) => e is ExternalException &&
        (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase) || e.Message.Contains("DefaultCPUAllocator", StringComparison.Ordinal));
}
