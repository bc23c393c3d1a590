using Harness.Executor.Distributed;
using Harness.Executor.Optimizer;
using static TorchSharp.torch;

namespace Harness.Executor.DataParallel;

/// <summary>
/// Megatron's --overlap-param-gather for the distributed optimizer (start_param_sync / finish_param_sync of
/// distributed/param_and_grad_buffer.py, driven by distributed_data_parallel.py's forward pre-hooks): after the optimizer
/// step the updated weights are not all-gathered at once. <see cref="Start"/> launches the all-gather of the bucket the
/// next forward needs first; before each layer, <see cref="WaitFor"/> makes the compute stream wait for the buckets
/// holding the parameters it is about to use, copies them into the model, and launches the next bucket's all-gather,
/// which then runs on the communication stream while that layer computes. Buckets go in the order the forward first
/// uses them (they were cut from the output end, for backward), one ahead of the compute, so joining the
/// communication stream waits for exactly the buckets needed. Each bucket goes through the same all-gather as without
/// overlap (<see cref="DistributedOptimizer.CopyMasterToParams"/>), so the weights are the same to the bit.
/// </summary>
public sealed class ParamGather : IDisposable
{
    private readonly DistributedOptimizer optimizer;
    private readonly ICommunicationStream stream;
    private readonly GradBucket[] order;
    private readonly (int Chunk, int Point)[] neededAt;
    private readonly Queue<(Tensor Mine, Tensor Gathered)> inFlight = new();
    private int launched, copied;

    /// <param name="buckets">The buckets whose weights are all-gathered after a step (under ZeRO 3 the vectors only).</param>
    /// <param name="firstUse">Where the forward first uses a parameter, by its name in the buffer: (model chunk, the layer
    /// whose input it is, the number of layers for the final norm and output layer); chunks run in order.</param>
    public ParamGather(DistributedOptimizer optimizer, ParamAndGradBuffer buffer, IReadOnlyList<GradBucket> buckets,
        Func<string, (int Chunk, int Point)> firstUse, ICommunicationStream stream)
    {
        (this.optimizer, this.stream) = (optimizer, stream);
        var needed = buckets.ToDictionary(b => b.Index, b => buffer.Layout.Where(l => l.Offset >= b.Offset && l.Offset < b.Offset + b.Count)
            .Min(l => firstUse(l.Name)));
        order = buckets.OrderBy(b => needed[b.Index]).ToArray(); // stable: ties keep bucket order
        neededAt = order.Select(b => needed[b.Index]).ToArray();
        launched = copied = order.Length; // nothing pending before the first step
    }

    /// <summary>After the optimizer step: every bucket's weights are stale; the all-gather of the first needed one starts.</summary>
    public void Start()
    {
        Finish();
        launched = copied = 0;
        Launch();
    }

    /// <summary>Before the forward first uses the parameters needed at (<paramref name="chunk"/>, <paramref name="point"/>):
    /// waits for their buckets and copies them in; launches the all-gather of the bucket needed next.</summary>
    public void WaitFor(int chunk, int point)
    {
        while (copied < order.Length && neededAt[copied].CompareTo((chunk, point)) <= 0)
        {
            if (launched == copied) Launch();
            stream.JoinCompute();
            var (mine, gathered) = inFlight.Dequeue();
            optimizer.CopyGathered(order[copied++], gathered);
            mine.Dispose();
            gathered.Dispose();
        }
        if (launched == copied && launched < order.Length) Launch();
    }

    /// <summary>Waits for every bucket still pending (before the weights are read or loaded, and at the end).</summary>
    public void Finish() => WaitFor(int.MaxValue, int.MaxValue);

    private void Launch() => inFlight.Enqueue(optimizer.GatherParams(order[launched++], stream));

    /// <summary>Releases the buffers of a gather still in flight, once the stream is done with them (the caller synchronized
    /// or destroyed it); launches nothing, as a rank that is shutting down after a failure must not wait for its peers.</summary>
    public void Dispose()
    {
        foreach (var (mine, gathered) in inFlight)
        {
            mine.Dispose();
            gathered.Dispose();
        }
        inFlight.Clear();
    }
}
