using Harness.Executor.Distributed;
using Harness.Executor.Training;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// --overlap-grad-reduce: buckets reduced during backward give bit for bit the results of reducing them after it,
/// match the serial run, and really are reduced during backward.
/// </summary>
public class GradientOverlapTests
{
    /// <summary>Small enough that the tiny models' weight matrices fall into several buckets.</summary>
    private const long BucketSize = 3000;

    private static RunDescription Config(bool overlap, int dp = 2, int tp = 1, int pp = 1, int? layersPerVirtualStage = null, int zero = 0, bool sp = false) =>
        new(DataParallel: dp, TensorParallel: tp, PipelineParallel: pp, LayersPerVirtualStage: layersPerVirtualStage, SequenceParallel: sp,
            MicroBatch: 1, GlobalBatch: 2 * dp * pp, ZeroStage: zero, Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: overlap),
            DdpBucketSize: BucketSize);

    private static void AssertOverlapChangesNoBit(ModelSpec spec, Func<bool, RunDescription> config)
    {
        var batches = Reference.Batches(spec, ParallelRun.Steps, config(true).GlobalBatch);
        var serial = Reference.Serial(spec, batches, microBatch: 1);
        var overlapped = ParallelRun.Train(spec, config(true), batches, serial.Initial);
        var after = ParallelRun.Train(spec, config(false), batches, serial.Initial);
        for (int r = 0; r < overlapped.Length; r++)
        {
            Assert.Equal(after[r].Losses, overlapped[r].Losses);
            foreach (var (name, w) in after[r].Final) Assert.Equal(w, overlapped[r].Final[name]);
            foreach (var (name, g) in after[r].LastGrads) Assert.Equal(g, overlapped[r].LastGrads[name]);
        }
        ParallelRun.AssertMatchesSerial(spec, config(true));
    }

    [Fact]
    public void Dp2OverlappedEqualsReducedAfterBackward() => AssertOverlapChangesNoBit(Reference.Llama(), o => Config(o));

    [Fact]
    public void Dp2DistributedOptimizerOverlappedEqualsReducedAfterBackward() => AssertOverlapChangesNoBit(Reference.Gpt(), o => Config(o, zero: 1));

    [Fact]
    public void InterleavedTp2Pp2Dp2SequenceParallelOverlappedEqualsReducedAfterBackward() =>
        AssertOverlapChangesNoBit(Reference.Gpt(layers: 4), o => Config(o, tp: 2, pp: 2, layersPerVirtualStage: 1, zero: 1, sp: true));

    [Fact]
    public void OverlappedBucketsAreReducedWhileBackwardStillRuns()
    {
        // Under tensor parallelism backward makes all-reduces of its own (the f operators): with overlap, the
        // data-parallel reduction of the first buckets comes before the last of them; without, after all of them.
        Assert.True(DataParallelCallBeforeATensorParallelOne(overlap: true), "no bucket was reduced during backward");
        Assert.False(DataParallelCallBeforeATensorParallelOne(overlap: false), "a bucket was reduced during backward without overlap");
    }

    private static bool DataParallelCallBeforeATensorParallelOne(bool overlap)
    {
        TorchRuntime.Initialize();
        var spec = Reference.Llama();
        var config = Config(overlap, tp: 2);
        var batch = Reference.Batches(spec, 1, config.GlobalBatch)[0];
        var logs = InProcessJob.Run(config.WorldSize, world =>
        {
            var log = new List<string>();
            using var groups = ProcessGroups.Create(new RecordingCommunicator(world, log), RankOrder.For(world.Size, 2, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, config, CPU, 1, Reference.Adam);
            log.Clear();
            using var scope = NewDisposeScope();
            trainer.Step(Reference.Lr, i =>
            {
                var rows = batch.narrow(0, (i * 2 + groups.DataRank), 1);
                return (rows[.., ..spec.SeqLength], rows[.., 1..]);
            });
            return log;
        });
        var log = logs[0];
        int firstDataParallel = log.IndexOf("dp-cp all-reduce");
        Assert.True(firstDataParallel >= 0, string.Join(", ", log));
        return log.Skip(firstDataParallel).Contains("tp all-reduce");
    }
}
