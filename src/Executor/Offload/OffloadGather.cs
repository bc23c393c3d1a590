using Harness.Executor.Distributed;
using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// Every rank's offload bookkeeping of the last step (<see cref="OffloadRecord"/>s), gathered to every rank so that rank 0
/// can record them (collective). The ranks hold different counts (the last pipeline rank offloads one chunk fewer), so
/// the counts go first and the records follow padded to the largest, as float64: bytes are whole numbers below 2^53,
/// exact in a double.
/// </summary>
public static class OffloadGather
{
    private const int Fields = 4;

    /// <summary>The records of every rank of <paramref name="world"/>, in rank order.</summary>
    public static IReadOnlyList<IReadOnlyList<OffloadRecord>> All(ICommunicator world, IReadOnlyList<OffloadRecord> mine, Device device)
    {
        using var scope = NewDisposeScope();
        var counts = zeros(world.Size, dtype: ScalarType.Float64, device: device);
        world.AllGather(tensor(new[] { (double)mine.Count }, device: device), counts);
        var perRank = counts.cpu().data<double>().Select(n => (int)n).ToArray();
        int most = perRank.Max();
        if (most == 0) return perRank.Select(_ => (IReadOnlyList<OffloadRecord>)[]).ToList();
        var flat = new double[most * Fields];
        for (int i = 0; i < mine.Count; i++)
            (flat[i * Fields], flat[i * Fields + 1], flat[i * Fields + 2], flat[i * Fields + 3]) = (mine[i].MicroBatch, mine[i].Chunk, mine[i].SavedBytes, mine[i].OffloadedBytes);
        var all = zeros(world.Size * most * Fields, dtype: ScalarType.Float64, device: device);
        world.AllGather(tensor(flat, device: device), all);
        var values = all.cpu().data<double>().ToArray();
        return perRank.Select((n, r) => (IReadOnlyList<OffloadRecord>)Enumerable.Range(0, n).Select(i =>
        {
            int at = (r * most + i) * Fields;
            return new OffloadRecord((int)values[at], (int)values[at + 1], values[at + 2], values[at + 3]);
        }).ToList()).ToList();
    }
}
