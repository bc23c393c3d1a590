using Harness.Simulator.Specs;

namespace Harness.Search;

/// <summary>A configuration close to the space, and every reason RunDescription.Validate gives against it.</summary>
public sealed record NearMissConfig(RunDescription Config, IReadOnlyList<string> Reasons);

/// <summary>
/// Why a space holds no valid configuration: the factorizations of the world size (within the constraints)
/// that come closest, each with every reason it is invalid, fewest reasons first.
/// </summary>
public static class SpaceDiagnosis
{
    public static IReadOnlyList<NearMissConfig> WhyEmpty(SearchSpace space, int count = 3)
    {
        var c = space.Constraints;
        int world = space.Cluster.WorldSize;
        IEnumerable<int> Sizes(IReadOnlyList<int>? only) => only ?? Divisors.Of(world);
        int mb = c.MicroBatch?[0] ?? 1;
        int? l = c.LayersPerVirtualStage is { Count: > 0 } ls && ls[0] > 0 ? ls[0] : null;
        var recompute = c.Recompute is { Count: > 0 } kinds ? RecomputeChoices.Representative(kinds[0]) : RecomputeSpec.None;
        double alpha = c.OffloadGrid()[0];
        int zero = c.ZeroStage?[0] ?? (c.Implementation.Fsdp is null ? 0 : MegatronFsdp.DefaultStage);
        bool sp = c.SequenceParallel is { Count: > 0 } sps && sps[0];
        var misses = new List<NearMissConfig>();
        foreach (int tp in Sizes(c.TensorParallel))
            foreach (int pp in Sizes(c.PipelineParallel))
                foreach (int cp in Sizes(c.ContextParallel))
                {
                    int dp = (int)Math.Max(1, world / ((long)tp * pp * cp));
                    if (c.DataParallel is { Count: > 0 } dps) dp = dps[0];
                    foreach (double p in c.SyncFactors)
                    {
                        var comm = cp > 1 && c.ContextParallelComm is { Count: > 0 } comms ? comms[0] : ContextParallelCommType.P2p;
                        // a2a+p2p's smallest all-to-all level above 1 (Validate names what is wrong with it).
                        int? a2a = comm == ContextParallelCommType.A2aP2p ? Divisors.Of(cp).FirstOrDefault(d => d > 1 && d < cp, cp) : null;
                        var config = new Layout(dp, tp, pp, cp, l, sp, mb, p, comm, a2a).ToConfig(space.GlobalBatch, zero, recompute, alpha, space.Constraints.Implementation);
                        var reasons = config.Validate(space.Model, world).ToList();
                        if (c.TensorParallelWithinNode && space.Cluster.GpusPerNode % tp != 0)
                            reasons.Add($"--max-tp-per-node keeps tensor parallelism inside a node of {space.Cluster.GpusPerNode} GPUs; {tp} does not divide it.");
                        misses.Add(new NearMissConfig(config, reasons));
                    }
                }
        return misses.OrderBy(m => m.Reasons.Count).Take(count).ToList();
    }
}
