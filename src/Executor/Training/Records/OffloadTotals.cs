using Harness.Executor.Offload;

namespace Harness.Executor.Training.Records;

/// <summary>
/// One rank's activation-offload bookkeeping of the last step, summed (summary.json's OffloadPerRank): the chunk forwards
/// (or offloaded layers) it recorded, the bytes they chose from, those copied to the host, and those left on the device,
/// the resident saved bytes, which is what `harness validate --offload` sets beside the simulator's
/// (Simulator.Schedule.RankOffload). Bytes are whole numbers: the offload counts tensor elements times their size.
/// </summary>
public sealed record OffloadTotals(int Records, long SavedBytes, long OffloadedBytes, long ResidentBytes)
{
    public static OffloadTotals Of(IReadOnlyList<OffloadRecord> records) =>
        new(records.Count, (long)records.Sum(r => r.SavedBytes), (long)records.Sum(r => r.OffloadedBytes), (long)records.Sum(r => r.ResidentBytes));
}
