using System.Globalization;
using System.Text.Json;
using Harness.Cli.Commands;

namespace Harness.Tests.Executor;

/// <summary>`harness run`'s flags reach the run and its record: recomputation by Megatron's method and the learning-rate
/// schedule by its style.</summary>
[Collection("Console")]
public class RunCommandTests
{
    [Fact]
    public void RecomputeMethodAndScheduleFlagsReachTheRunAndItsRecord()
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}");
        var (code, output, error) = ConsoleCapture.Run(RunCommand.Run,
            "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "64", "--mock-data",
            "--micro-batch-size", "1", "--global-batch-size", "2", "--train-iters", "4", "--lr", "1e-3", "--min-lr", "1e-4", "--lr-decay-style", "linear",
            "--lr-warmup-iters", "1", "--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "1", "--out", dir);
        Assert.True(code == 0, error);
        Assert.Contains("full-recompute block 1", output);
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
        var recompute = summary.RootElement.GetProperty("Description").GetProperty("Recompute");
        Assert.Equal(("Full", "Block", 1), (recompute.GetProperty("Granularity").GetString(), recompute.GetProperty("Method").GetString(), recompute.GetProperty("NumLayers").GetInt32()));
        Assert.Equal("Linear", summary.RootElement.GetProperty("Settings").GetProperty("LearningRate").GetProperty("DecayStyle").GetString());
        // Warm-up over the first iteration (from 0), then linear to min-lr at iteration 4: r = 1/3, 2/3.
        var lr = File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Skip(1).Select(l => double.Parse(l.Split(',')[7], CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(4, lr.Length);
        Assert.Equal(0, lr[0]);
        Assert.Equal(1e-3, lr[1], 15);
        Assert.Equal(1e-4 + 9e-4 * 2 / 3, lr[2], 15);
        Assert.Equal(1e-4 + 9e-4 / 3, lr[3], 15);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void KwaiRecomputeFlagsTrainALlamaStyleModelAndReachItsRecord()
    {
        string dir = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}");
        var (code, output, error) = ConsoleCapture.Run(RunCommand.Run, "--device", "cpu",
            "--num-layers", "2", "--hidden-size", "32", "--ffn-hidden-size", "48", "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "64",
            "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--untie-embeddings-and-output-weights", "--mock-data",
            "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "6", "--lr", "3e-3",
            "--kaimm-recompute-norm", "--kaimm-recompute-mlp-activation-func", "--out", dir);
        Assert.True(code == 0, error);
        Assert.Contains("kwai-recompute-norm kwai-recompute-mlp-activation", output);
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
        var run = summary.RootElement;
        var recompute = run.GetProperty("Description").GetProperty("Recompute");
        Assert.True(recompute.GetProperty("NormOutputs").GetBoolean() && recompute.GetProperty("MlpActivation").GetBoolean());
        Assert.Equal("None", recompute.GetProperty("Granularity").GetString());
        Assert.Equal(("SwiGlu", "RmsNorm"), (run.GetProperty("Model").GetProperty("Activation").GetString(), run.GetProperty("Model").GetProperty("Normalization").GetString()));
        // It trains: the loss of the last iteration is below the first's.
        var losses = File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Skip(1).Select(l => double.Parse(l.Split(',')[5], CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(6, losses.Length);
        Assert.True(losses[^1] < losses[0], string.Join(", ", losses));
        Directory.Delete(dir, recursive: true);
    }
}
