using Harness.Cli.Commands;
using Harness.Executor.Training;
using Harness.Executor.Training.Records;

namespace Harness.Tests.Executor;

/// <summary>Megatron's --check-for-nan-in-loss-and-grad: a checkpoint whose weights are NaN, loaded, stops the run at its
/// first iteration in one sentence, on one device and on two ranks, and saves nothing of it; the switch off lets it go on.</summary>
[Collection("Console")]
public class NanCheckTests
{
    private static readonly string[] Tiny =
    [
        "--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "8",
        "--vocab-size", "64", "--mock-data", "--micro-batch-size", "1", "--global-batch-size", "2", "--device", "cpu",
    ];

    private static StepResult Step(float loss, float? norm, double? scale) => new(loss, norm, 0, 0, 0, 0, null, StopReason.None, scale);

    [Fact]
    public void ANonFiniteLossStopsAndANonFiniteNormOnlyWithoutALossScaler()
    {
        Assert.Equal("loss is NaN", NanCheck.Find(Step(float.NaN, 1, null)));
        Assert.Equal("loss is Inf", NanCheck.Find(Step(float.PositiveInfinity, null, 65536)));
        Assert.Equal("gradient norm is Inf", NanCheck.Find(Step(2, float.PositiveInfinity, null)));
        Assert.Equal("gradient norm is NaN", NanCheck.Find(Step(2, float.NaN, null)));
        // Under a loss scaler an overflowing gradient is the scaler's business (a skipped step).
        Assert.Null(NanCheck.Find(Step(2, float.NaN, 65536)));
        Assert.Null(NanCheck.Find(Step(2, null, 65536)));
        Assert.Null(NanCheck.Find(Step(2, 0.5f, null)));
    }

    [Theory]
    [InlineData]
    [InlineData("--nproc-per-node", "2")]
    public void ALoadedCheckpointOfNanWeightsStopsAtItsFirstIterationAndSavesNothing(params string[] layout)
    {
        string root = Path.Combine(TestTemp.Root, $"harness-nan-{Guid.NewGuid():N}"), ckpt = Path.Combine(root, "ckpt"), output = Path.Combine(root, "out");
        try
        {
            var (code, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, .. layout, "--train-iters", "2", "--save", ckpt, "--out", Path.Combine(root, "first")]);
            Assert.True(code == 0, error);
            // float32 NaN (0x7FC00000, little-endian) in every master weight of the checkpoint.
            foreach (var file in Directory.GetFiles(Path.Combine(ckpt, "iter_0000002"), "master.bin", SearchOption.AllDirectories))
                File.WriteAllBytes(file, Enumerable.Repeat(new byte[] { 0, 0, 0xC0, 0x7F }, (int)(new FileInfo(file).Length / 4)).SelectMany(b => b).ToArray());

            string[] resume = [.. Tiny, .. layout, "--train-iters", "5", "--save-interval", "1", "--save", ckpt, "--load", ckpt, "--out", output];
            (code, _, error) = ConsoleCapture.Run(RunCommand.Run, resume);
            Assert.Equal(2, code);
            Assert.Equal($"harness run: iteration 3's loss is NaN, so the run stopped there without saving it (--no-check-for-nan-in-loss-and-grad lets a run go on); " +
                         $"this run saved no checkpoint in {ckpt}. (the 1 iterations done are in {output}: metrics.csv, summary.json, plots)", error.Trim());
            Assert.Equal("2", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
            Assert.False(Directory.Exists(Path.Combine(ckpt, "iter_0000003")));

            // Without the check the run goes on to --train-iters, NaN losses recorded.
            (code, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. resume, "--no-check-for-nan-in-loss-and-grad", "--overwrite"]);
            Assert.True(code == 0, error);
            var losses = File.ReadAllLines(Path.Combine(output, "metrics.csv")).Skip(1).Select(l => l.Split(',')[5]).ToList();
            Assert.Equal(3, losses.Count);
            Assert.All(losses, l => Assert.Equal("NaN", l));
        }
        finally { Directory.Delete(root, recursive: true); }
    }
}
