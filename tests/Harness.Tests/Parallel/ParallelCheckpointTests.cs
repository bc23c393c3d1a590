using System.Globalization;
using Harness.Cli.Commands;

namespace Harness.Tests.Parallel;

/// <summary>
/// `harness run --save/--load` on CPU ranks: a run resumed from its checkpoint continues with the uninterrupted run's
/// losses and gradient norms, bit for bit; a checkpoint resumes under another data-parallel sharding of the optimizer
/// (within 1e-5: the reduction order changes); one saved under another weight split is one sentence and exit 2.
/// </summary>
[Collection("Console")]
public class ParallelCheckpointTests
{
    private static readonly string[] Tiny =
    [
        "--num-layers", "2", "--hidden-size", "32", "--ffn-hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "16",
        "--vocab-size", "128", "--mock-data", "--micro-batch-size", "1", "--global-batch-size", "4", "--device", "cpu",
        "--lr", "3e-3", "--lr-warmup-iters", "1", "--seed", "5",
    ];

    private const int Iterations = 4, SavedAt = 2;

    /// <summary>(loss, gradient norm) of each iteration in an --out folder's metrics.csv, by iteration.</summary>
    private static List<(long Iteration, double Loss, double GradNorm)> Metrics(string outDir) =>
        File.ReadAllLines(Path.Combine(outDir, "metrics.csv")).Skip(1).Select(l => l.Split(','))
            .Select(f => (long.Parse(f[0], CultureInfo.InvariantCulture), double.Parse(f[5], CultureInfo.InvariantCulture), double.Parse(f[6], CultureInfo.InvariantCulture)))
            .ToList();

    private static (int Code, string Err) Run(string[] layout, params string[] extra)
    {
        var (code, _, err) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, .. layout, .. extra]);
        return (code, err.Trim());
    }

    /// <summary>Trains <see cref="Iterations"/> straight, then <see cref="SavedAt"/> with --save and the rest with --load
    /// (<paramref name="resumeLayout"/>, by default the same); returns both runs' metrics (the resumed run's out folder
    /// holds the first part's rows too, appended).</summary>
    private static (List<(long Iteration, double Loss, double GradNorm)> Straight, List<(long Iteration, double Loss, double GradNorm)> Resumed)
        StraightAndResumed(string[] layout, string[]? resumeLayout = null, string[]? rankFolders = null, string stateFile = "exp_avg.bin")
    {
        string root = Path.Combine(TestTemp.Root, $"harness-pckpt-{Guid.NewGuid():N}");
        try
        {
            string ckpt = Path.Combine(root, "ckpt");
            Assert.Equal((0, ""), Run(layout, "--train-iters", $"{Iterations}", "--out", Path.Combine(root, "straight")));
            Assert.Equal((0, ""), Run(layout, "--train-iters", $"{SavedAt}", "--save", ckpt, "--out", Path.Combine(root, "resumed")));
            Assert.Equal($"{SavedAt}", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
            string saved = Path.Combine(ckpt, $"iter_{SavedAt:D7}");
            foreach (var folder in rankFolders ?? [])
                Assert.True(File.Exists(Path.Combine(saved, folder, stateFile)), $"no {folder}/{stateFile} in {saved}");
            Assert.Equal((0, ""), Run(resumeLayout ?? layout, "--train-iters", $"{Iterations}", "--load", ckpt, "--out", Path.Combine(root, "resumed")));
            return (Metrics(Path.Combine(root, "straight")), Metrics(Path.Combine(root, "resumed")));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void Tp2Pp2ResumesBitForBit()
    {
        string[] layout = ["--nproc-per-node", "4", "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"];
        var (straight, resumed) = StraightAndResumed(layout, rankFolders: ["mp_rank_00_000", "mp_rank_01_000", "mp_rank_00_001", "mp_rank_01_001"]);
        Assert.Equal(Enumerable.Range(1, Iterations).Select(i => (long)i), resumed.Select(r => r.Iteration));
        Assert.Equal(straight, resumed);
        // Every iteration differs (new data, new weights), so a resume that restored too little could not match.
        Assert.Equal(Iterations, straight.Select(r => r.Loss).Distinct().Count());
    }

    [Fact]
    public void Dp2DistributedOptimizerResumesBitForBitAndItsShardsResumeUnderAnotherSharding()
    {
        // Without dropout: each data-parallel rank draws its micro-batches' masks from the same stream (Megatron's seeding),
        // so with dropout another data-parallel size drops other elements; the claim here is about the optimizer's shards.
        string[] noDropout = ["--hidden-dropout", "0", "--attention-dropout", "0"];
        string[] dp2 = ["--nproc-per-node", "2", "--use-distributed-optimizer", .. noDropout];
        var (straight, resumed) = StraightAndResumed(dp2, rankFolders: ["mp_rank_00/dp_rank_000", "mp_rank_00/dp_rank_001"]);
        Assert.Equal(straight, resumed);
        // The two shards re-cut into one replicated optimizer (a single-device run), and into four shards (dp 4).
        AssertResumesElsewhere(dp2, straight, noDropout, ["--nproc-per-node", "4", "--use-distributed-optimizer", .. noDropout]);
    }

    [Fact]
    public void SgdsMomentumShardsResumeBitForBitAndUnderAnotherSharding()
    {
        // --optimizer sgd at SGD's rate: the distributed optimizer's shards of the momentum buffer, resumed by the same layout
        // and re-cut into one replicated optimizer (a single-device run).
        string[] sgd = ["--optimizer", "sgd", "--lr", "0.3", "--hidden-dropout", "0", "--attention-dropout", "0"];
        string[] dp2 = ["--nproc-per-node", "2", "--use-distributed-optimizer", .. sgd];
        var (straight, resumed) = StraightAndResumed(dp2, rankFolders: ["mp_rank_00/dp_rank_000", "mp_rank_00/dp_rank_001"], stateFile: "momentum_buffer.bin");
        Assert.Equal(straight, resumed);
        Assert.Equal(Iterations, straight.Select(r => r.Loss).Distinct().Count());
        AssertResumesElsewhere(dp2, straight, sgd);
    }

    [Fact]
    public void Zero3ResumesBitForBitAndUnderOtherStagesAndShardings()
    {
        // ZeRO 2 and 3 save the distributed optimizer's shards (the same files), so a checkpoint moves between stages too.
        string[] noDropout = ["--hidden-dropout", "0", "--attention-dropout", "0"];
        string[] zero3 = ["--nproc-per-node", "2", "--zero-stage", "3", .. noDropout];
        var (straight, resumed) = StraightAndResumed(zero3, rankFolders: ["mp_rank_00/dp_rank_000", "mp_rank_00/dp_rank_001"]);
        Assert.Equal(straight, resumed);
        AssertResumesElsewhere(zero3, straight, ["--nproc-per-node", "4", "--zero-stage", "2", .. noDropout],
            ["--nproc-per-node", "2", "--use-distributed-optimizer", .. noDropout]);
        var (zero1, _) = StraightAndResumed(["--nproc-per-node", "2", "--use-distributed-optimizer", .. noDropout]);
        AssertResumesElsewhere(["--nproc-per-node", "2", "--use-distributed-optimizer", .. noDropout], zero1, ["--nproc-per-node", "4", "--zero-stage", "3", .. noDropout]);
    }

    /// <summary>A checkpoint of <paramref name="layout"/>, whose uninterrupted run is <paramref name="straight"/>, resumed under each
    /// of <paramref name="others"/>: the same losses and gradient norms within 1e-5 (the reduction order changes).</summary>
    private static void AssertResumesElsewhere(string[] layout, List<(long Iteration, double Loss, double GradNorm)> straight, params string[][] others)
    {
        foreach (var other in others)
        {
            var (_, elsewhere) = StraightAndResumed(layout, other);
            for (int i = SavedAt; i < Iterations; i++)
            {
                Assert.Equal(straight[i].Iteration, elsewhere[i].Iteration);
                Assert.True(Math.Abs(elsewhere[i].Loss - straight[i].Loss) <= 1e-5 * straight[i].Loss, $"{string.Join(' ', other)}: loss {elsewhere[i].Loss} vs {straight[i].Loss}");
                Assert.True(Math.Abs(elsewhere[i].GradNorm - straight[i].GradNorm) <= 1e-5 * straight[i].GradNorm, $"{string.Join(' ', other)}: grad norm {elsewhere[i].GradNorm} vs {straight[i].GradNorm}");
            }
        }
    }

    /// <summary>
    /// fp16 on two ranks with the distributed optimizer and a scale that doubles after every clean iteration (window 1,
    /// from 1024): the checkpoint keeps the loss scaler's state, so the resumed run goes on from the saved scale; its
    /// rows (loss, norm, scale, skipped count) are the uninterrupted run's to the character. Restarting the scaler would
    /// show in the loss_scale column.
    /// </summary>
    [Fact]
    public void Fp16ResumesTheLossScaleBitForBit()
    {
        string[] layout = ["--nproc-per-node", "2", "--use-distributed-optimizer", "--fp16", "--accumulate-allreduce-grads-in-fp32",
            "--initial-loss-scale", "1024", "--loss-scale-window", "1"];
        string root = Path.Combine(TestTemp.Root, $"harness-pckpt-{Guid.NewGuid():N}");
        try
        {
            string ckpt = Path.Combine(root, "ckpt");
            Assert.Equal((0, ""), Run(layout, "--train-iters", $"{Iterations}", "--out", Path.Combine(root, "straight")));
            Assert.Equal((0, ""), Run(layout, "--train-iters", $"{SavedAt}", "--save", ckpt, "--out", Path.Combine(root, "resumed")));
            Assert.Equal((0, ""), Run(layout, "--train-iters", $"{Iterations}", "--load", ckpt, "--out", Path.Combine(root, "resumed")));
            string[][] Rows(string run)
            {
                var lines = File.ReadAllLines(Path.Combine(root, run, "metrics.csv"));
                var header = lines[0].Split(',').ToList();
                int[] columns = [.. new[] { "iteration", "loss", "grad_norm", "learning_rate", "loss_scale", "skipped_iterations" }.Select(name => header.IndexOf(name))];
                return [.. lines.Skip(1).Select(l => columns.Select(c => l.Split(',')[c]).ToArray())];
            }
            var straight = Rows("straight");
            Assert.Equal(["2048", "4096", "8192", "16384"], straight.Select(r => r[4]));
            Assert.Equal(straight, Rows("resumed"));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    /// <summary>
    /// `harness run --fp16` on two ranks with the distributed optimizer keeps fp16 main gradients (Megatron's default without
    /// --accumulate-allreduce-grads-in-fp32), with or without the precision-aware optimizer's fp16 master weights, fp16
    /// first moments and fp8 second moments (all scaled per tensor): the checkpoint holds their float32 values, as
    /// FusedAdam.state_dict() gives them, and loading stores them back (rescaled), so the resumed run's losses and norms are
    /// the uninterrupted run's to the bit (bf16 weights, and with them the remainders, run on CPU ranks only in-process:
    /// PrecisionAwareOptimizerTests).
    /// </summary>
    [Theory]
    [InlineData("--fp16 --initial-loss-scale 1024 --use-precision-aware-optimizer --main-params-dtype fp16 --exp-avg-dtype fp16 --exp-avg-sq-dtype fp8")]
    [InlineData("--fp16 --initial-loss-scale 1024")]
    public void Fp16MainGradientsAndPrecisionAwareStatesResumeBitForBit(string flags)
    {
        string[] layout = ["--nproc-per-node", "2", "--use-distributed-optimizer", "--hidden-dropout", "0", "--attention-dropout", "0", .. flags.Split(' ')];
        var (straight, resumed) = StraightAndResumed(layout, rankFolders: ["mp_rank_00/dp_rank_000", "mp_rank_00/dp_rank_001"]);
        Assert.Equal(straight, resumed);
        Assert.Equal(Iterations, straight.Select(r => r.Loss).Distinct().Count());
    }

    [Fact]
    public void ACheckpointOfAnotherWeightSplitIsOneSentence()
    {
        string root = Path.Combine(TestTemp.Root, $"harness-pckpt-{Guid.NewGuid():N}");
        try
        {
            string ckpt = Path.Combine(root, "ckpt");
            Assert.Equal((0, ""), Run(["--nproc-per-node", "2", "--tensor-model-parallel-size", "2"], "--train-iters", "1", "--save", ckpt, "--out", Path.Combine(root, "a")));
            var (code, err) = Run(["--nproc-per-node", "2", "--pipeline-model-parallel-size", "2"], "--train-iters", "2", "--load", ckpt, "--out", Path.Combine(root, "b"));
            Assert.Equal(2, code);
            Assert.Equal($"harness run: The checkpoint in {Path.Combine(ckpt, "iter_0000001")} was saved with tensor 2 x pipeline 1 and this run is " +
                         "tensor 1 x pipeline 2; load it with the layout it was saved with.", err);
            // A single-device run is tensor 1 x pipeline 1.
            (code, err) = Run([], "--train-iters", "2", "--load", ckpt, "--out", Path.Combine(root, "c"));
            Assert.Equal(2, code);
            Assert.Contains("was saved with tensor 2 x pipeline 1 and this run is tensor 1 x pipeline 1;", err);
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    /// <summary>Uneven stages split the weights too: 3 layers saved as 1 + 2 do not load as 2 + 1.</summary>
    [Fact]
    public void ACheckpointOfAnotherUnevenSplitIsOneSentence()
    {
        string root = Path.Combine(TestTemp.Root, $"harness-pckpt-{Guid.NewGuid():N}");
        string[] Layout(int first) => ["--nproc-per-node", "2", "--pipeline-model-parallel-size", "2", "--decoder-first-pipeline-num-layers", $"{first}"];
        (int Code, string Err) RunThree(string[] layout, params string[] extra)
        {
            var (code, _, err) = ConsoleCapture.Run(RunCommand.Run, ["--num-layers", "3", .. Tiny.Skip(2), .. layout, .. extra]);
            return (code, err.Trim());
        }
        try
        {
            string ckpt = Path.Combine(root, "ckpt");
            Assert.Equal((0, ""), RunThree(Layout(1), "--train-iters", "1", "--save", ckpt, "--out", Path.Combine(root, "a")));
            var (code, err) = RunThree(Layout(2), "--train-iters", "2", "--load", ckpt, "--out", Path.Combine(root, "b"));
            Assert.Equal(2, code);
            Assert.Equal($"harness run: The checkpoint in {Path.Combine(ckpt, "iter_0000001")} was saved with tensor 1 x pipeline 2 (layers 1, 2) " +
                         "and this run is tensor 1 x pipeline 2 (layers 2, 1); load it with the layout it was saved with.", err);
            Assert.Equal((0, ""), RunThree(Layout(1), "--train-iters", "2", "--load", ckpt, "--out", Path.Combine(root, "c")));
        }
        finally { Directory.Delete(root, recursive: true); }
    }
}
