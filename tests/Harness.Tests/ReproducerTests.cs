using Harness.Reproduce;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>
/// The reproduction's own arithmetic, with a hand-written cost function in place of the simulator so every
/// expected number can be derived by hand: errors, MAPE, the choice of unknown knobs, fit decisions and ordering.
/// </summary>
public class ReproducerTests
{
    private static Experiment Load(string name) => ExperimentFileTests.Load(name);

    [Fact]
    public void ErrorsAndMapeAreRelativeToThePublishedValue()
    {
        // Every configuration runs at 6000 tokens/s/GPU and fits, except no-recompute ones (OOM).
        var e = Load("kwai-atc24-7b-demo");
        var t = new Reproducer((m, c, p) => new SimulatedStep(1, 6000, 1, p.RecomputeOrNone != RecomputeSpec.None)).Run(e);
        var published = new double[] { 3016, 3803, 2847, 6639, 8273, 6138 };
        var expected = published.Select(p => Math.Abs(6000 - p) / p).ToList();
        Assert.Equal(expected.Average(), t.Errors.Mape, 12);
        Assert.Equal(expected.Max(), t.Errors.MaxAbs, 12);
        Assert.Equal("A800 NVIDIA Megatron-LM", t.Errors.Worst);
        Assert.Equal(8, t.FitDecisionsRight);
        // Equal throughput for every method cannot rank them.
        Assert.False(t.Order.Right);
    }

    [Fact]
    public void OrderHoldsWhenTheMethodsComeOutInThePublishedOrder()
    {
        var e = Load("kwai-atc24-table8");
        // Offloading (theirs) fastest, then overlapped p2p (their baseline), then NVIDIA's.
        var t = new Reproducer((m, c, p) => new SimulatedStep(1,
            p.OffloadRatio > 0 ? 390 : p.OverlapOrDefault.PipelineP2p ? 300 : 280, 1, true)).Run(e);
        Assert.True(t.Order.Right);
        Assert.Equal(3, t.FitDecisionsRight); // the no-recompute row "fits" here, against the paper
    }

    [Fact]
    public void UnknownKnobsTakeTheFastestConfigurationThatFits()
    {
        // Narayanan's 145.6B row (p 8, 10 layers per rank) with its micro-batch and interleaving left out: throughput
        // grows with micro-batch and chunks, but only micro-batch <= 2 fits; the choice must be micro-batch 2 and
        // 1 layer per virtual stage (v = 10).
        var e = Load("narayanan-2021-table1");
        var row = e.Rows[6];
        var open = e with
        {
            Choose = new ChoiceSpace([1, 2, 4, 8, 16], "divisors"),
            Rows = [row with { Args = row.Args!.Without("micro-batch-size", "num-layers-per-virtual-pipeline-stage") }],
        };
        var t = new Reproducer((m, c, p) => new SimulatedStep(1, 100 * p.MicroBatch + p.VirtualStages(m), 1, p.MicroBatch <= 2)).Run(open);
        var r = t.Rows.Single();
        Assert.Equal((2, 1), (r.Setup.Config.MicroBatch, r.Setup.Config.LayersPerVirtualStage));
        Assert.Equal("micro-batch 2, 1 layer per virtual stage (v = 10)", r.Choice);
    }

    [Fact]
    public void WholeJobThroughputIsPerGpuThroughputTimesTheGpus()
    {
        // Figure 9's first row ran on 256 GPUs: 300 tokens/s/GPU is 76,800 tokens/s.
        var e = Load("kwai-atc24-fig9");
        var t = new Reproducer((m, c, p) => new SimulatedStep(1, 300, 1, true)).Run(e with { Rows = [e.Rows[0]] });
        var r = t.Rows.Single();
        Assert.Equal(300 * 256, r.Simulated, 9);
        Assert.Equal((300.0 * 256 - 97577) / 97577, r.Error!.Value, 12);
    }

    [Fact]
    public void TflopsAreCountedAsThePaperCounts()
    {
        // Narayanan's 1.7B row at 1000 tokens/s/GPU is 1000 x 96 L h^2 (1 + s/(6h) + V/(16 L h)) FLOP/s.
        var e = Load("narayanan-2021-table1");
        var t = new Reproducer((m, c, p) => new SimulatedStep(1, 1000, 1, true)).Run(e with { Rows = [e.Rows[0]] });
        double L = 24, h = 2304, s = 2048, V = 51200;
        double f = 96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h));
        Assert.Equal(1000 * f / 1e12, t.Rows.Single().Simulated, 9);
    }
}
