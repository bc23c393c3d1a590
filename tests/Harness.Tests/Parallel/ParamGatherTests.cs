using Harness.Executor.Distributed;
using Harness.Executor.Training;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// --overlap-param-gather: the distributed optimizer's all-gathers of the updated weights, made bucket by bucket as the
/// next forward first needs them, give bit for bit the results of gathering every bucket after the step, match the
/// serial run, and really are made during the forward.
/// </summary>
public class ParamGatherTests
{
    /// <summary>Small enough that the tiny models' weight matrices fall into several buckets.</summary>
    private const long BucketSize = 3000;

    private static RunDescription Config(int dp = 2, int tp = 1, int pp = 1, int? layersPerVirtualStage = null, bool sp = false, bool overlapGradReduce = false) =>
        new(DataParallel: dp, TensorParallel: tp, PipelineParallel: pp, LayersPerVirtualStage: layersPerVirtualStage, SequenceParallel: sp,
            MicroBatch: 1, GlobalBatch: 2 * dp * pp, ZeroStage: 1, Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: overlapGradReduce),
            DdpBucketSize: BucketSize);

    /// <summary>The config with --overlap-param-gather.</summary>
    private static RunDescription Gathered(RunDescription config) => config with { Overlap = config.OverlapOrDefault with { ParamGather = true } };

    private static void AssertOverlapChangesNoBit(ModelSpec spec, RunDescription config)
    {
        var batches = Reference.Batches(spec, ParallelRun.Steps, config.GlobalBatch);
        var serial = Reference.Serial(spec, batches, microBatch: 1);
        var overlapped = ParallelRun.Train(spec, Gathered(config), batches, serial.Initial);
        var after = ParallelRun.Train(spec, config, batches, serial.Initial);
        for (int r = 0; r < overlapped.Length; r++)
        {
            Assert.Equal(after[r].Losses, overlapped[r].Losses);
            foreach (var (name, w) in after[r].Final) Assert.Equal(w, overlapped[r].Final[name]);
        }
        ParallelRun.AssertMatchesSerial(spec, Gathered(config));
    }

    [Fact]
    public void Dp2OverlappedEqualsGatheredAfterTheStep() => AssertOverlapChangesNoBit(Reference.Llama(), Config());

    [Fact]
    public void InterleavedTp2Pp2Dp2SequenceParallelWithOverlappedGradReduceEqualsGatheredAfterTheStep() =>
        AssertOverlapChangesNoBit(Reference.Gpt(layers: 4), Config(tp: 2, pp: 2, layersPerVirtualStage: 1, sp: true, overlapGradReduce: true));

    [Fact]
    public void OverlappedGathersRunDuringTheNextForward()
    {
        // Under tensor parallelism the forward makes all-reduces of its own (g after row-parallel linears): with overlap,
        // the second step's forward comes between the weight all-gathers; without, all of them follow its backward.
        Assert.True(TensorParallelCallAfterAWeightGather(overlap: true), "no weight all-gather was made during the forward");
        Assert.False(TensorParallelCallAfterAWeightGather(overlap: false), "a weight all-gather was made during the forward without overlap");
    }

    [Fact]
    public void NeedsTheDistributedOptimizer()
    {
        TorchRuntime.Initialize();
        var e = Assert.Throws<RankFailuresException>(() => InProcessJob.Run(2, world =>
        {
            using var groups = ProcessGroups.Create(world, RankOrder.For(2, 1, 1, 1));
            using var trainer = new ParallelTrainer(groups, Reference.Llama(), Config() with { ZeroStage = 0, Overlap = new OverlapSpec(ParamGather: true) },
                CPU, 1, Reference.Adam);
            return 0;
        }));
        Assert.All(e.Failures, f => Assert.Contains("--overlap-param-gather needs --use-distributed-optimizer", f.Error.Message));
    }

    private static bool TensorParallelCallAfterAWeightGather(bool overlap)
    {
        TorchRuntime.Initialize();
        var spec = Reference.Llama();
        var config = Config(tp: 2);
        var batch = Reference.Batches(spec, 1, config.GlobalBatch)[0];
        var logs = InProcessJob.Run(config.WorldSize, world =>
        {
            var log = new List<string>();
            using var groups = ProcessGroups.Create(new RecordingCommunicator(world, log), RankOrder.For(world.Size, 2, 1, 1));
            using var trainer = new ParallelTrainer(groups, spec, overlap ? Gathered(config) : config, CPU, 1, Reference.Adam);
            using var scope = NewDisposeScope();
            trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
            log.Clear();
            trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
            return log;
        });
        var log = logs[0];
        int firstGather = log.IndexOf("dp-cp all-gather");
        Assert.True(firstGather >= 0, string.Join(", ", log));
        return log.Skip(firstGather).Contains("tp all-reduce");
    }
}
