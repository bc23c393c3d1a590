using Harness.Executor.Native;

namespace Harness.Executor.Distributed.Nccl;

/// <summary>
/// A CUDA stream for NCCL calls that overlap the model's kernels (Megatron's overlap_grad_reduce), ordered against the
/// compute stream by events only (<see cref="CudaSideStream"/>): <see cref="WaitForCompute"/> before a collective, where
/// its data became ready; <see cref="JoinCompute"/> before the optimizer reads the gradients.
/// </summary>
internal sealed class CudaCommunicationStream(int device) : ICommunicationStream
{
    private readonly CudaSideStream side = new(device);

    public void WaitForCompute() => side.WaitForCompute();

    public void JoinCompute() => side.JoinCompute();

    public IDisposable Enqueue(ICommunicator group) =>
        group is NcclCommunicator nccl
            ? nccl.UseStream(side.Stream)
            : throw new CommunicatorException($"group {group.Name} is not an NCCL communicator; a CUDA stream cannot run its calls.");

    public void Dispose() => side.Dispose();
}
