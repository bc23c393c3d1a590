using BenchmarkDotNet.Attributes;
using Harness.Simulator;
using Harness.Simulator.Specs;

namespace Harness.Benchmarks;

/// <summary>
/// Configurations simulated per second on one core: Llama-175B (s 8192, global batch 256) on 256 H800s,
/// interleaved 1F1B, over a set of layouts around Megatron-Kwai's Table 8 (t 2-8, p 4-16, v 2-12,
/// cp 1-2, recompute none / ours / full). Targets (issue 2): at least 20,000 per second through the full
/// op-by-op schedule, 1,000,000 per second through the closed form. configs/s = 1e9 / (ns per op).
/// </summary>
[MemoryDiagnoser]
public class SimulatorBenchmarks
{
    private static readonly ModelSpec Model = ModelPresets.All["llama-175b"];
    private static readonly ClusterSpec Cluster = ClusterSpec.Of(GpuPresets.All["h800"], 256);
    private RunDescription[] configs = [];

    public const int Layouts = 16;

    [GlobalSetup]
    public void Setup()
    {
        var list = new List<RunDescription>();
        foreach (var (t, cp, p, l) in new[] { (4, 1, 8, 2), (2, 2, 16, 1), (8, 1, 4, 4), (4, 2, 8, 1), (8, 1, 8, 2), (2, 1, 16, 2), (4, 1, 16, 1), (8, 2, 4, 2) })
            foreach (var r in new[] { RecomputeSpec.Kwai, RecomputeSpec.FullUniform() })
            {
                int dp = 256 / (t * cp * p);
                list.Add(new RunDescription(dp, t, p, l, cp, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 256,
                    Recompute: r, OffloadRatio: r == RecomputeSpec.Kwai ? 0.5 : 0, ZeroStage: 1));
            }
        configs = list.ToArray();
        foreach (var c in configs)
            if (Estimator.Validate(Model, Cluster, c).Count > 0) throw new InvalidOperationException($"invalid layout {c}");
    }

    [Benchmark(OperationsPerInvoke = Layouts)]
    public double FullSchedule()
    {
        double sum = 0;
        foreach (var c in configs) sum += Estimator.Estimate(Model, Cluster, c).StepTimeSeconds;
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Layouts)]
    public double ClosedForm()
    {
        double sum = 0;
        foreach (var c in configs) sum += Estimator.EstimateClosedForm(Model, Cluster, c).StepTimeSeconds;
        return sum;
    }
}
