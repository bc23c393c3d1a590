namespace Harness.Executor.Native;

/// <summary>
/// Where libtorch's autograd engine runs a thread's backward pass. By default the CUDA work of every backward goes to the one
/// worker thread the engine keeps per device (torch/csrc/autograd/engine.cpp, Engine::ready_queue and "Allocating GPUs to
/// autograd threads"). Ranks that are threads of one process on one GPU would then share that thread, and a rank waiting
/// inside backward for the others' collective (tensor parallelism's input-gradient all-reduce, context parallelism's
/// exchanges, gradient hooks) would hold the thread their backward needs. With multithreading disabled for a thread
/// (torch.autograd.set_multithreading_enabled(False), a thread-local switch, c10/core/AutogradState.h), the engine runs the
/// whole of that thread's backward on the thread itself, as it does on the CPU.
/// </summary>
public static unsafe class AutogradThreads
{
    /// <summary>Makes the calling thread run its own backward passes; null when done, else why it could not be.</summary>
    public static string? RunBackwardOnThisThread()
    {
        if (LibtorchShim.Export("harness_autograd_multithreading") is not IntPtr set)
            return $"the autograd engine's thread cannot be set without the libtorch shim: {LibtorchShim.Unavailable}";
        return ((delegate* unmanaged<int, int>)set)(0) == 0 ? null : "libtorch refused to disable autograd multithreading for the thread";
    }
}
