using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// The Adam step is memory-bound: per parameter it reads and writes the fp32 master weight, m and v (24 B),
/// reads the fp32 gradient (4 B), writes the bf16 weight (2 B), and the gradient-norm clip reads the gradient
/// once more (4 B): 34 B. With the distributed optimizer each rank updates its 1/d shard.
/// </summary>
public static class OptimizerTime
{
    public const double BytesPerParameter = 34;

    public static double Step(double parameters, RunDescription c, GpuSpec gpu)
    {
        double shard = c.ZeroStage >= 1 ? c.DataParallel * c.ContextParallel : 1;
        return ComputeTime.MemoryBound(parameters / shard * BytesPerParameter, gpu);
    }
}
