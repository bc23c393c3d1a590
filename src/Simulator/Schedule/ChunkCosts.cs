namespace Harness.Simulator.Schedule;

/// <summary>
/// One model chunk's transformer layers on one micro-batch (<see cref="PipelineCosts"/>): what scales with the chunk's
/// layer count, which differs for the first and last virtual stages when they hold their own number of layers (uneven
/// stages, or the embedding or loss counted as a layer).
/// </summary>
/// <param name="Layers">Transformer layers in the chunk: overlapped gradient reduction proceeds in buckets that become
/// ready layer by layer during the chunk's final backward.</param>
/// <param name="Forward">Forward seconds, with the communication it does not hide.</param>
/// <param name="Backward">Backward seconds, with recomputation and the communication it does not hide.</param>
/// <param name="Compute">Forward and backward kernels alone.</param>
/// <param name="Recompute">What recomputation repeats.</param>
/// <param name="TensorParallel">Exposed tensor-parallel communication, forward and backward.</param>
/// <param name="ContextParallel">Exposed context-parallel communication, forward and backward.</param>
/// <param name="DataParallel">ZeRO 2 and 3's collectives of a micro-batch (<see cref="Costs.ZeroMicroBatchComm"/>) that
/// the chunk's forward and backward do not hide, and the compute they slow where they hide; part of
/// <paramref name="Forward"/> and <paramref name="Backward"/>.</param>
/// <param name="Activations">Bytes kept from forward to backward.</param>
/// <param name="Offloaded">Megatron-Kwai's activations copied to host memory and freed after the forward
/// (<see cref="Costs.Offload.Chunk"/>).</param>
/// <param name="Stranded">What the caching allocator holds beyond the kept activations while the chunk waits for its backward.</param>
/// <param name="OffloadTransfer">Seconds to copy <paramref name="Offloaded"/> over the host link.</param>
/// <param name="GradientReduce">Data-parallel reduction of the chunk's parameter gradients.</param>
/// <param name="OffloadRecorded">What Megatron-Kwai's offload chose <paramref name="Offloaded"/> from (<see cref="Costs.ChunkOffload.Recorded"/>).</param>
public readonly record struct ChunkCosts(
    int Layers = 0,
    double Forward = 0,
    double Backward = 0,
    double Compute = 0,
    double Recompute = 0,
    double TensorParallel = 0,
    double ContextParallel = 0,
    double DataParallel = 0,
    double Activations = 0,
    double Offloaded = 0,
    double Stranded = 0,
    double OffloadTransfer = 0,
    double GradientReduce = 0,
    double OffloadRecorded = 0)
{
    public static ChunkCosts operator +(ChunkCosts a, ChunkCosts b) => new(
        a.Layers + b.Layers, a.Forward + b.Forward, a.Backward + b.Backward, a.Compute + b.Compute, a.Recompute + b.Recompute,
        a.TensorParallel + b.TensorParallel, a.ContextParallel + b.ContextParallel, a.DataParallel + b.DataParallel,
        a.Activations + b.Activations, a.Offloaded + b.Offloaded, a.Stranded + b.Stranded, a.OffloadTransfer + b.OffloadTransfer,
        a.GradientReduce + b.GradientReduce, a.OffloadRecorded + b.OffloadRecorded);
}
