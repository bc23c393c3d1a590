namespace Harness.Simulator.Schedule;

/// <summary>
/// What Megatron-Kwai's activation offload goes through on one pipeline rank in one iteration, as the simulator counts it
/// (ATC'24 artifact, branch atc24ae, megatron/core/pipeline_parallel/schedules.py with offload.py): every forward of each
/// of the rank's model chunks but the model's last (whose backward follows its forward at once), one per micro-batch,
/// records <see cref="ChunkCosts.OffloadRecorded"/> and offloads <see cref="ChunkCosts.Offloaded"/> of it; the rest
/// (<see cref="Resident"/>) stays on the GPU until the chunk's backward. The model's first chunk cuts the embedding's
/// dropout mask with its activations (<see cref="PipelineCosts.FirstStageChunk"/>). What the caching allocator strands beyond
/// the resident bytes (<see cref="ChunkCosts.Stranded"/>) is the allocator's, not the offload's, and not counted here.
/// The executor keeps the same account per chunk and micro-batch (ParallelTrainer.Offloaded; `harness validate --offload`
/// sets the two side by side).
/// </summary>
/// <param name="Records">Chunk forwards offloaded: the rank's offloaded chunks times the micro-batches.</param>
/// <param name="Recorded">Bytes the offload chose from, over them all.</param>
/// <param name="Offloaded">Bytes it copied to the host, over them all.</param>
public readonly record struct RankOffload(int Records, double Recorded, double Offloaded)
{
    /// <summary>Recorded bytes left on the GPU while their chunks waited for their backward, over the iteration.</summary>
    public double Resident => Recorded - Offloaded;

    /// <summary>Pipeline rank <paramref name="rank"/>'s offload under <paramref name="k"/>; nothing when alpha is 0.</summary>
    public static RankOffload Of(in PipelineCosts k, int rank)
    {
        if (k.OffloadRatio <= 0) return default;
        var sum = default(RankOffload);
        for (int c = 0; c < k.V; c++)
        {
            if (rank == k.P - 1 && c == k.V - 1) continue;
            var chunk = k.ChunkOf(rank, c);
            sum = new RankOffload(sum.Records + k.M, sum.Recorded + k.M * chunk.OffloadRecorded, sum.Offloaded + k.M * chunk.Offloaded);
        }
        return sum;
    }
}
