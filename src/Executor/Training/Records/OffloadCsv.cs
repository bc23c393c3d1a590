using System.Globalization;
using Harness.Executor.Offload;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training.Records;

/// <summary>
/// offload.csv: the activation offload's bookkeeping of a run's last step, one row per rank and record, as the executor
/// kept it (<see cref="OffloadRecord"/>): under Megatron-Kwai's --offload-ratio one per model chunk (local to the rank) and
/// micro-batch, the model's last chunk left out (it offloads nothing); under Megatron-core's --cpu-offloading-num-layers
/// one per offloaded layer and micro-batch, in a "layer" column. Saved bytes are those the offload chose from; resident
/// bytes, saved less offloaded, stayed on the device until the backward.
/// </summary>
public static class OffloadCsv
{
    public const string FileName = "offload.csv";

    /// <summary>Writes <paramref name="perRank"/> (every rank's records, in rank order) to <paramref name="path"/>.</summary>
    public static void Write(string path, RunDescription description, IReadOnlyList<IReadOnlyList<OffloadRecord>> perRank)
    {
        var c = CultureInfo.InvariantCulture;
        string unit = description.CpuOffloadingLayers > 0 ? "layer" : "chunk";
        var lines = new List<string> { $"rank,micro_batch,{unit},saved_bytes,offloaded_bytes,resident_bytes" };
        for (int rank = 0; rank < perRank.Count; rank++)
            lines.AddRange(perRank[rank].Select(r => string.Join(',', rank.ToString(c), r.MicroBatch.ToString(c), r.Chunk.ToString(c),
                ((long)r.SavedBytes).ToString(c), ((long)r.OffloadedBytes).ToString(c), ((long)r.ResidentBytes).ToString(c))));
        File.WriteAllLines(path, lines);
    }
}
