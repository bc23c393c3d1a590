using Harness.Executor.Native;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.TensorParallel;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

public class PartialSyncTests
{
    [Fact]
    public void TheFirstFloorPhChannelsAreSummedAndTheRestScaledBySqrtT()
    {
        // h = 5, p = 0.5: floor(2.5) = 2 channels all-reduced; t = 2 so the other 3 are multiplied by √2.
        Assert.Equal(2, PartialAllReduce.SynchronizedChannels(0.5, 5));
        var results = InProcessJob.Run(2, c =>
        {
            var x = tensor(new float[] { 1, 2, 3, 4, 5 }).Times(c.Rank + 1).requires_grad_(true);
            var y = PartialAllReduce.Apply(x, c, 2);
            autograd.backward([y], [tensor(new float[] { 1, 1, 1, 1, 1 }).Times(10 * (c.Rank + 1))]);
            return (y.data<float>().ToArray(), x.grad!.data<float>().ToArray());
        });
        float r2 = MathF.Sqrt(2);
        Assert.Equal(new[] { 3f, 6f, 3 * r2, 4 * r2, 5 * r2 }, results[0].Item1);
        Assert.Equal(new[] { 3f, 6f, 6 * r2, 8 * r2, 10 * r2 }, results[1].Item1);
        // Backward: the same map on the gradient (10 and 20 summed in the first two channels).
        Assert.Equal(new[] { 30f, 30f, 10 * r2, 10 * r2, 10 * r2 }, results[0].Item2);
    }

    [Fact]
    public void SyncFactorOneEqualsFullSynchronization()
    {
        // p = 1 through the partial-sync path (no f before column-parallel linears, g's all-reduce in both
        // directions, one f before the first layer, norm gradients all-reduced) gives the serial numbers. The
        // trainer takes that path for p < 1, so p is 1 − 1e-12, for which floor(p·h) = h: every channel is synced.
        var p1 = new RunDescription(TensorParallel: 2, SyncFactor: 1.0, MicroBatch: 2, GlobalBatch: 2, Precision: Precision.Fp32);
        ParallelRun.AssertMatchesSerial(Reference.Llama(), p1 with { SyncFactor = 1.0 - 1e-12 });
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), p1 with { TensorParallel = 4, SyncFactor = 1.0 - 1e-12 });
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(0.0)]
    public void PartialSyncIsDeterministicAndTrains(double p)
    {
        var spec = Reference.Llama();
        var config = new RunDescription(TensorParallel: 2, SyncFactor: p, MicroBatch: 2, GlobalBatch: 2, Precision: Precision.Fp32);
        var batches = Reference.Batches(spec, 4, batch: 2);
        var serial = Reference.Serial(spec, batches);
        var first = ParallelRun.Train(spec, config, batches, serial.Initial);
        var second = ParallelRun.Train(spec, config, batches, serial.Initial);
        Assert.Equal(first[0].Losses, second[0].Losses);          // bit for bit
        Assert.Equal(first[0].Losses, first[1].Losses);           // the loss is all-reduced: every rank agrees
        Assert.True(first[0].Losses[^1] < first[0].Losses[0] - 0.1, $"p = {p} does not train: {string.Join(", ", first[0].Losses)}");
        // Unsynchronized channels change the function: not the serial model's loss after the first step.
        Assert.True(Reference.RelativeError(first[0].Losses, serial.Losses) > 1e-4, "p < 1 gave the fully synchronized losses");
    }
}
