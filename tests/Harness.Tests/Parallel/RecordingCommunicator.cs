using Harness.Executor.Distributed;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>A communicator that logs "group op" of every collective this rank makes, in order, over it and every group split from it.</summary>
internal sealed class RecordingCommunicator(ICommunicator inner, List<string> log) : ICommunicator
{
    public int Rank => inner.Rank;
    public int Size => inner.Size;
    public string Name => inner.Name;
    public CommunicationStats Stats => inner.Stats;

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum) { Log("all-reduce"); inner.AllReduce(tensor, op); }
    public void AllGather(Tensor input, Tensor output) { Log("all-gather"); inner.AllGather(input, output); }
    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum) { Log("reduce-scatter"); inner.ReduceScatter(input, output, op); }
    public void AllToAll(Tensor input, Tensor output) { Log("all-to-all"); inner.AllToAll(input, output); }
    public void Broadcast(Tensor tensor, int root) { Log("broadcast"); inner.Broadcast(tensor, root); }
    public void Send(Tensor tensor, int peer) { Log("send"); inner.Send(tensor, peer); }
    public void Recv(Tensor tensor, int peer) { Log("recv"); inner.Recv(tensor, peer); }
    public IDisposable Group() => inner.Group();
    public void Barrier() => inner.Barrier();
    public ICommunicationStream CreateCommunicationStream() => inner.CreateCommunicationStream();

    public ICommunicator? Split(int color, int key, string name) =>
        inner.Split(color, key, name) is { } sub ? new RecordingCommunicator(sub, log) : null;

    public void Dispose() => inner.Dispose();

    private void Log(string op)
    {
        lock (log) log.Add($"{Name} {op}");
    }
}
