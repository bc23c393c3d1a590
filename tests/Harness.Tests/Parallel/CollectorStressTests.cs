using Harness.Executor.Transformer;
using Harness.Simulator.Specs;

namespace Harness.Tests.Parallel;

/// <summary>
/// A layout trained while another thread collects garbage without pause: every native handle the executor passes to
/// libtorch (tensors, Scalars, generators) must stay alive until libtorch has read it, or a finalizer frees it first.
/// </summary>
[Collection("Alone")]
public class CollectorStressTests
{
    [Fact]
    public void Tp2Dp2WithEverythingOnMatchesSerialWhileTheCollectorRuns()
    {
        using var collection = new ConstantCollection();
        // Tensor-parallel mappings and sequence parallelism, the distributed optimizer's overlapped bucket
        // reduce-scatters (gradient hooks in backward), selective recomputation, and the scripted kernels' scalars.
        var config = new RunDescription(DataParallel: 2, TensorParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4,
            ZeroStage: 1, Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: true));
        ParallelRun.AssertMatchesSerial(Reference.Llama(), config with { Recompute = RecomputeSpec.Selective, DdpBucketSize = 3000 });
    }

    /// <summary>The newer paths under the same collector: ZeRO 3's gathered and freed weights, Ulysses' all-to-alls, uneven
    /// pipeline stages.</summary>
    [Theory]
    [InlineData("zero3")]
    [InlineData("ulysses")]
    [InlineData("uneven")]
    public void NewerLayoutsMatchSerialWhileTheCollectorRuns(string layout)
    {
        using var collection = new ConstantCollection();
        var config = layout switch
        {
            "zero3" => new RunDescription(DataParallel: 2, TensorParallel: 2, SequenceParallel: true, MicroBatch: 1, GlobalBatch: 4, ZeroStage: 3,
                Precision: Precision.Fp32, Overlap: new OverlapSpec(GradientReduce: true)),
            "ulysses" => new RunDescription(DataParallel: 2, ContextParallel: 2, MicroBatch: 1, GlobalBatch: 4,
                ContextParallelComm: ContextParallelCommType.A2a, Precision: Precision.Fp32),
            _ => new RunDescription(DataParallel: 1, PipelineParallel: 2, MicroBatch: 1, GlobalBatch: 4, Precision: Precision.Fp32,
                AccountForEmbeddingInPipelineSplit: true, AccountForLossInPipelineSplit: true),
        };
        ParallelRun.AssertMatchesSerial(Reference.Llama(), config);
    }

    /// <summary>The single-device trainer under the same collector: training, a checkpoint saved, and a run resumed from it,
    /// with the same losses as without the collector.</summary>
    [Fact]
    public void OneDeviceSavesAndResumesWhileTheCollectorRuns()
    {
        var model = Harness.Executor.Training.DefaultRun.Model with { SeqLength = 32 };
        var description = new RunDescription(MicroBatch: 4, GlobalBatch: 4, Precision: Precision.Fp32);
        string ckpt = Path.Combine(TestTemp.Root, $"harness-stress-{Guid.NewGuid():N}");
        // Four iterations throughout (the sampler's order depends on the iterations asked for); the first run stops at 2.
        RunSettings Settings(long? exitInterval = null, string? save = null, string? load = null) =>
            new(TrainIters: 4, Seed: 7, DataPath: DataBlend.Single(Harness.Executor.Training.DefaultRun.DataPath), Save: save, Load: load, LogInterval: 1,
                ExitInterval: exitInterval);
        IReadOnlyList<double> Losses(RunSettings settings) =>
            new Harness.Executor.Training.TrainingRun(model, description, settings, Path.Combine(TestTemp.Root, $"harness-stress-{Guid.NewGuid():N}"), _ => { })
                .RunSingleDevice().Select(r => r.Loss).ToList();
        try
        {
            var straight = Losses(Settings());
            using var collection = new ConstantCollection();
            Assert.Equal(straight.Take(2), Losses(Settings(exitInterval: 2, save: ckpt)));
            Assert.Equal(straight.Skip(2), Losses(Settings(load: ckpt)));
        }
        finally
        {
            if (Directory.Exists(ckpt)) Directory.Delete(ckpt, recursive: true);
        }
    }

    /// <summary>A tiny Llama on four CPU ranks, TP 2 x DP 2 with the distributed optimizer, from the command line.</summary>
    private static readonly string[] Tp2Dp2 =
    [
        "--num-layers", "2", "--hidden-size", "32", "--ffn-hidden-size", "48", "--num-attention-heads", "4", "--seq-length", "16",
        "--vocab-size", "128", "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--untie-embeddings-and-output-weights",
        "--mock-data", "--micro-batch-size", "1", "--global-batch-size", "4", "--device", "cpu", "--lr", "3e-3", "--seed", "5",
        "--hidden-dropout", "0", "--attention-dropout", "0", "--split", "90,10,0", "--eval-interval", "1", "--eval-iters", "1",
        "--nproc-per-node", "4", "--tensor-model-parallel-size", "2", "--use-distributed-optimizer", "--train-iters", "3",
    ];

    /// <summary>The paths a run takes outside the training step, on every rank, under the same collector: a TP2 x DP2
    /// distributed-optimizer checkpoint saved (--exit-interval) and resumed, the validation loss after every iteration, the
    /// checkpoint exported to a Hugging Face folder and a run started from that folder. The saved-and-resumed run's losses,
    /// gradient norms and validation losses are those of the run without the collector and without the interruption.</summary>
    [Fact]
    public void Tp2Dp2SavesResumesEvaluatesAndExportsWhileTheCollectorRuns()
    {
        string root = Path.Combine(TestTemp.Root, $"harness-stress-{Guid.NewGuid():N}");
        static void Succeeds(params string[] args)
        {
            var (code, _, err) = ConsoleCapture.Run(Harness.Cli.CommandTable.Dispatch, args);
            Assert.True(code == 0, err);
        }
        IReadOnlyList<(double Loss, double? GradNorm, double? Validation)> Rows(string run) =>
            [.. Harness.Executor.Training.Records.MetricsCsv.Read(Path.Combine(root, run, "metrics.csv")).Select(r => (r.Loss, r.GradNorm, r.ValidationLoss))];
        try
        {
            string ckpt = Path.Combine(root, "ckpt"), hf = Path.Combine(root, "hf");
            Succeeds(["run", .. Tp2Dp2, "--out", Path.Combine(root, "straight")]);
            using (new ConstantCollection())
            {
                Succeeds(["run", .. Tp2Dp2, "--exit-interval", "2", "--save", ckpt, "--out", Path.Combine(root, "resumed")]);
                Succeeds(["run", .. Tp2Dp2, "--load", ckpt, "--save", ckpt, "--out", Path.Combine(root, "resumed")]);
                Succeeds(["export", .. Tp2Dp2, "--load", ckpt, "--out", hf]);
                Succeeds(["run", .. Tp2Dp2, "--load-format", "hf", "--load", hf, "--train-iters", "1", "--out", Path.Combine(root, "from-hf")]);
            }
            var straight = Rows("straight");
            Assert.Equal(3, straight.Count(r => r.Validation is not null));
            Assert.Equal(straight, Rows("resumed"));
            Assert.Single(Rows("from-hf"));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }
}
