using Harness.Executor.Distributed;
using static TorchSharp.torch;

namespace Harness.Executor.PipelineParallel;

/// <summary>
/// Point-to-point transfers between pipeline ranks (Megatron's p2p_communication.py), on a ring: activations go to
/// the next rank and gradients to the previous one, each direction on its own communicator so that, with two
/// ranks, an activation and a gradient between the same pair are never confused. A send is held back until this
/// rank's next receive and issued in one group with it (what Megatron's send_forward_recv_backward and friends
/// do), so NCCL never blocks one rank's send on a peer that is itself sending; <see cref="Flush"/> issues the rest.
/// </summary>
public sealed class P2PCommunication(ICommunicator activations, ICommunicator gradients) : IDisposable
{
    private readonly List<(ICommunicator Group, Tensor Tensor, int Peer)> pending = new();

    public int Rank => activations.Rank;
    public TimeSpan CommunicationTime => activations.Stats.Time + gradients.Stats.Time;
    public int Size => activations.Size;
    private int Next => (Rank + 1) % Size;
    private int Previous => (Rank + Size - 1) % Size;

    public void SendForward(Tensor output) => Hold(activations, output, Next);

    public void SendBackward(Tensor inputGrad) => Hold(gradients, inputGrad, Previous);

    public Tensor RecvForward(long[] shape, ScalarType dtype, Device device) => Receive(activations, Previous, shape, dtype, device);

    public Tensor RecvBackward(long[] shape, ScalarType dtype, Device device) => Receive(gradients, Next, shape, dtype, device);

    /// <summary>Issues the sends still held back.</summary>
    public void Flush()
    {
        if (pending.Count == 0) return;
        using (activations.Group()) Issue();
        Release();
    }

    private void Hold(ICommunicator group, Tensor t, int peer) =>
        // An alias outside the caller's dispose scope keeps the storage alive until the send is issued.
        pending.Add((group, t.detach().contiguous().alias().DetachFromDisposeScope(), peer));

    private Tensor Receive(ICommunicator group, int peer, long[] shape, ScalarType dtype, Device device)
    {
        var buffer = empty(shape, dtype: dtype, device: device);
        using (group.Group())
        {
            Issue();
            group.Recv(buffer, peer);
        }
        Release();
        return buffer;
    }

    private void Issue()
    {
        foreach (var (group, t, peer) in pending) group.Send(t, peer);
    }

    /// <summary>After the group is enqueued: later kernels that reuse the memory are ordered after the sends.</summary>
    private void Release()
    {
        foreach (var p in pending) p.Tensor.Dispose();
        pending.Clear();
    }

    public void Dispose()
    {
        foreach (var p in pending) p.Tensor.Dispose();
        activations.Dispose();
        gradients.Dispose();
    }
}
