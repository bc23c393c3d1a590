using System.Globalization;
using Harness.Executor.Optimizer;
using Harness.Executor.Training.Records;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>Real training on CPU with the shipped corpus. Runs one at a time: they share libtorch's global generator.</summary>
[Collection("training")]
public class TrainingTests
{
    private static readonly ModelSpec Small = DefaultRun.Model with { SeqLength = 32 };

    private static TrainingOptions Options(long iters, string? save = null, string? load = null) =>
        new(Small, MicroBatchSize: 4, GlobalBatchSize: 4, TrainIters: iters,
            Schedule: new LearningRateSchedule(3e-3, 3e-4, 3, 30), DataPath: DefaultRun.DataPath, Save: save, Load: load, Seed: 7);

    private static List<IterationRecord> Train(TrainingOptions o)
    {
        var records = new List<IterationRecord>();
        using var trainer = new Trainer(o);
        trainer.Run(records.Add);
        return records;
    }

    [Fact]
    public void LossFallsOnTheShippedCorpus()
    {
        var records = Train(Options(20));
        // ln(50257) = 10.8 at initialization; the tiny model learns the corpus's unigram statistics within 20 steps.
        Assert.InRange(records[0].Loss, 10.6, 11.0);
        Assert.True(records.TakeLast(5).Average(r => r.Loss) < records[0].Loss - 1.5, string.Join(", ", records.Select(r => r.Loss)));
    }

    [Fact]
    public void ResumingFromACheckpointReproducesTheUninterruptedLossesBitForBit()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"harness-ckpt-{Guid.NewGuid():N}");
        var straight = Train(Options(6));
        Train(Options(3, save: dir));
        var resumed = Train(Options(6, load: dir));
        Assert.Equal(new long[] { 4, 5, 6 }, resumed.Select(r => r.Iteration));
        Assert.Equal(straight.Skip(3).Select(r => r.Loss), resumed.Select(r => r.Loss));
        Assert.Equal(straight.Skip(3).Select(r => r.GradNorm), resumed.Select(r => r.GradNorm));
    }

    [Fact]
    public void TheTablesArePaddedAsMegatronPadsThem()
    {
        Assert.Equal(50304, VocabPadding.Padded(50257, 128, 1));   // GPT-2's vocabulary
        Assert.Equal(50432, VocabPadding.Padded(50257, 128, 2));
        Assert.Equal(32256, VocabPadding.Padded(32004, 128, 2));   // Megatron-Kwai's Llama vocabulary at t 2
        Assert.Equal(32000, VocabPadding.Padded(32000, 128, 1));
        // The tiny default model (50257 entries, h 128, tied): padding adds 47 rows of the one table; the data is still
        // checked against the tokenizer's 50257.
        using var padded = new Trainer(Options(1));
        using var unpadded = new Trainer(Options(1) with { MakeVocabSizeDivisibleBy = 1 });
        Assert.Equal(47L * Small.HiddenSize, padded.ParameterCount - unpadded.ParameterCount);
        Assert.Contains("--make-vocab-size-divisible-by is 0", (Options(1) with { MakeVocabSizeDivisibleBy = 0 }).Validate().Single());
    }

    [Fact]
    public void EveryRecordedRowIsOnDiskBeforeTheRunEnds()
    {
        string path = Path.Combine(Path.GetTempPath(), $"harness-metrics-{Guid.NewGuid():N}.csv");
        var csv = new MetricsCsv(path, append: false);
        using var trainer = new Trainer(Options(10));
        int seen = 0;
        // A crash after the third iteration: the writer is never closed, as when the process dies.
        Assert.Throws<InvalidOperationException>(() => trainer.Run(r =>
        {
            csv.Append(r);
            if (++seen == 3) throw new InvalidOperationException("crash");
        }));
        using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
        var lines = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(string.Join(',', MetricsCsv.Columns), lines[0].TrimEnd('\r'));
        Assert.Equal(4, lines.Length);
        for (int i = 1; i <= 3; i++)
        {
            var fields = lines[i].TrimEnd('\r').Split(',');
            Assert.Equal(MetricsCsv.Columns.Length, fields.Length);
            Assert.Equal(i, int.Parse(fields[0], CultureInfo.InvariantCulture));
            Assert.InRange(double.Parse(fields[5], CultureInfo.InvariantCulture), 5, 12);
        }
    }
}

/// <summary>Gradients of the recompute paths, in float64.</summary>
[Collection("training")]
public class RecomputeTests
{
    private static readonly ModelSpec Tiny = ModelTests.Tiny() with { NumLayers = 2, HiddenSize = 16, FfnHiddenSize = 24, VocabSize = 32, SeqLength = 8 };

    private static Tensor Gradients(RecomputeGranularity recompute)
    {
        var (model, buffer) = ModelTests.Build(Tiny, ScalarType.Float64, recompute, seed: 11);
        using var generator = new Generator(3);
        var tokens = randint(0, Tiny.VocabSize, new long[] { 2, Tiny.SeqLength }, generator: generator);
        model.forward(tokens, tokens.roll(1, 1)).backward();
        return buffer.MainGrads.clone();
    }

    [Fact]
    public void FullAndSelectiveRecomputeGiveTheSameGradientsAsNone()
    {
        var reference = Gradients(RecomputeGranularity.None);
        Assert.True(reference.abs().sum().item<double>() > 0);
        foreach (var mode in new[] { RecomputeGranularity.Selective, RecomputeGranularity.Full })
            Assert.True(Gradients(mode).allclose(reference, rtol: 1e-12, atol: 1e-14), $"{mode} recompute changed the gradients");
    }

    [Fact]
    public void CheckpointFunctionMatchesFiniteDifferences()
    {
        var (model, _) = ModelTests.Build(Tiny, ScalarType.Float64);
        using var g = new Generator(5);
        var x = randn(new long[] { 1, Tiny.SeqLength, Tiny.HiddenSize }, dtype: ScalarType.Float64, generator: g);
        var weight = randn(new long[] { 1, Tiny.SeqLength, Tiny.HiddenSize }, dtype: ScalarType.Float64, generator: g);
        // f(x) = sum(Decode(x) · r), through the custom function (each layer recomputed in backward).
        Tensor F(Tensor input) => (CheckpointFunction.Apply(h => model.Decode(h[0]), null, input) * weight).sum();
        var leaf = x.clone().requires_grad_(true);
        F(leaf).backward();
        var analytic = leaf.grad!.reshape(-1);
        using var _ = no_grad();
        var flat = x.reshape(-1);
        const double eps = 1e-6;
        for (int i = 0; i < flat.shape[0]; i += 7)
        {
            var plus = flat.clone();
            plus.narrow(0, i, 1).add_(eps);
            var minus = flat.clone();
            minus.narrow(0, i, 1).sub_(eps);
            double numeric = (F(plus.view(x.shape)).item<double>() - F(minus.view(x.shape)).item<double>()) / (2 * eps);
            Assert.Equal(numeric, analytic[i].item<double>(), 6);
        }
    }
}
