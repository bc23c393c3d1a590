namespace Harness.Executor.Native;

/// <summary>A CUDA runtime or driver call failed, or the library is missing; the message is one sentence. Native's own
/// failure: the layers above decide what it means to them (a communicator, a kernel probe).</summary>
public sealed class CudaException(string message) : Exception(message);
