using TorchSharp;
using System.Globalization;
using System.Text.Json;
using Harness.Executor.Optimizer;
using Harness.Executor.Training.Records;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Tests.Executor;

/// <summary>Real training on CPU with the shipped corpus, through the executor's one loop. Runs one at a time: they share libtorch's global generator.</summary>
[Collection("training")]
public class TrainingTests
{
    private static readonly ModelSpec Small = DefaultRun.Model with { SeqLength = 32 };
    private static readonly RunDescription Description = new(MicroBatch: 4, GlobalBatch: 4, Precision: Precision.Fp32);

    private static RunSettings Settings(long iters, string? save = null, string? load = null) =>
        new(TrainIters: iters, Seed: 7, LearningRate: new LearningRateSettings(3e-3, 3e-4, LearningRateDecayStyle.Cosine, WarmupIters: 3, DecayIters: 30),
            DataPath: DataBlend.Single(DefaultRun.DataPath), Save: save, Load: load, LogInterval: 1);

    private static string NewFolder() => Path.Combine(TestTemp.Root, $"harness-train-{Guid.NewGuid():N}");

    private static IReadOnlyList<IterationRecord> Train(RunSettings settings, Action<string>? log = null) =>
        new TrainingRun(Small, Description, settings, NewFolder(), log ?? (_ => { })).RunSingleDevice();

    [Fact]
    public void LossFallsOnTheShippedCorpus()
    {
        var records = Train(Settings(20));
        // ln(50257) = 10.8 at initialization; the tiny model learns the corpus's unigram statistics within 20 steps.
        Assert.InRange(records[0].Loss, 10.6, 11.0);
        Assert.True(records.TakeLast(5).Average(r => r.Loss) < records[0].Loss - 1.5, string.Join(", ", records.Select(r => r.Loss)));
    }

    [Fact]
    public void ResumingFromACheckpointReproducesTheUninterruptedLossesBitForBit()
    {
        string dir = NewFolder();
        var straight = Train(Settings(6));
        Train(Settings(3, save: dir));
        var resumed = Train(Settings(6, load: dir));
        Assert.Equal(new long[] { 4, 5, 6 }, resumed.Select(r => r.Iteration));
        Assert.Equal(straight.Skip(3).Select(r => r.Loss), resumed.Select(r => r.Loss));
        Assert.Equal(straight.Skip(3).Select(r => r.GradNorm), resumed.Select(r => r.GradNorm));
    }

    /// <summary>
    /// fp16 on one device (the serial trainer) at the edge of overflow: the tiny model's fp16 gradients overflow at a scale
    /// of 2^19, at 2^18 on some batches and not at 2^17 (measured; from 2^20 the run goes S S . . S S . . with S skipped). With
    /// hysteresis 1 and a window of 2 the scale halves on an overflow and doubles back after two clean steps; a
    /// checkpoint keeps the scaler's state and the optimizer's steps, and resuming reproduces the uninterrupted run's
    /// losses, norms, rates, scales and skipped counts bit for bit.
    /// </summary>
    [Fact]
    public void Fp16ResumesWithTheLossScalersStateAndItsSkippedIterations()
    {
        var fp16 = Description with { Precision = Precision.Fp16, GradientsInFp32 = true };
        var scaling = new LossScaleSettings(Initial: 1 << 20, Window: 2, Hysteresis: 1);
        IReadOnlyList<IterationRecord> Fp16(RunSettings settings) =>
            new TrainingRun(Small, fp16, settings with { LossScale = scaling }, NewFolder(), _ => { }).RunSingleDevice();
        string dir = NewFolder();
        var straight = Fp16(Settings(8));
        Assert.Null(straight[0].GradNorm);
        Assert.Equal(1 << 19, straight[0].LossScale);
        Assert.Contains(straight, r => r.GradNorm is not null);
        var scales = straight.Select(r => r.LossScale!.Value).ToList();
        Assert.Contains(scales.Zip(scales.Skip(1)), p => p.Second == 2 * p.First); // it grew again after two clean steps
        // The counts follow the norms: one more skipped iteration for each step without one.
        Assert.Equal(straight.Select((r, i) => (long)straight.Take(i + 1).Count(x => x.GradNorm is null)), straight.Select(r => r.SkippedIterations));
        Fp16(Settings(4, save: dir));
        var meta = Checkpoint.Latest(dir).Meta;
        Assert.Equal(straight[3].SkippedIterations, meta.SkippedIterations);
        Assert.Equal(straight[3].LossScale, meta.GradScaler!.Scale);
        var resumed = Fp16(Settings(8, load: dir));
        Assert.Equal(straight.Skip(4), resumed, new IterationNumbers());
        // The two skipped first steps left the master weights and Adam's moments as they were, to the byte, and took no step.
        string each = NewFolder();
        Fp16(Settings(2, save: each) with { SaveInterval = 1 });
        foreach (var file in new[] { "master.bin", "exp_avg.bin", "exp_avg_sq.bin" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(each, "iter_0000001", "mp_rank_00", file)), File.ReadAllBytes(Path.Combine(each, "iter_0000002", "mp_rank_00", file)));
        Assert.Equal((2, 0), (Checkpoint.Latest(each).Meta.Iteration, Checkpoint.Latest(each).Meta.OptimizerStep));
    }

    /// <summary>Two records agree on what the step computed (not on its timing).</summary>
    private sealed class IterationNumbers : IEqualityComparer<IterationRecord>
    {
        public bool Equals(IterationRecord? a, IterationRecord? b) =>
            (a!.Iteration, a.Loss, a.GradNorm, a.LearningRate, a.LossScale, a.SkippedIterations) == (b!.Iteration, b.Loss, b.GradNorm, b.LearningRate, b.LossScale, b.SkippedIterations);

        public int GetHashCode(IterationRecord r) => r.Iteration.GetHashCode();
    }

    [Fact]
    public void CtrlCStopsTheRunSavesWhatWasTrainedAndSaysSo()
    {
        // Cancelled while iteration 2 is reported: the next step reads it and is the last; its state is saved, the run says
        // so, its records are written, and resuming from the checkpoint continues with the uninterrupted run's numbers.
        string ckpt = NewFolder(), output = NewFolder();
        var straight = Train(Settings(6));
        var stop = new RunStop();
        var lines = new List<string>();
        var run = new TrainingRun(Small, Description, Settings(6, save: ckpt), output, line =>
        {
            lines.Add(line);
            if (line.StartsWith("iter      2/")) stop.Request(StopReason.Interrupt);
        });
        var stopped = run.RunSingleDevice(stop);
        Assert.Equal(new long[] { 1, 2, 3 }, stopped.Select(r => r.Iteration));
        Assert.Equal(StopReason.Interrupt, run.Stopped);
        Assert.Contains($"harness run: interrupted (SIGINT) after iteration 3 of 6; saved a checkpoint of it in {ckpt} (resume with --load {ckpt}).", lines);
        Assert.Equal("3", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
        using (var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json"))))
            Assert.Equal(3, summary.RootElement.GetProperty("Iterations").GetInt64());
        var resumed = Train(Settings(6, load: ckpt));
        Assert.Equal(straight.Skip(3).Select(r => r.Loss), resumed.Select(r => r.Loss));
    }

    [Fact]
    public void AResumedRunIsOneContinuousMetricsCsvAndOneSummary()
    {
        // Checkpoints every 3 iterations; the process dies while iteration 5 is reported (rows 1-5 on disk). Resumed from
        // iteration 3 into the same --out, rows 4 and 5 are replaced: metrics.csv holds 1..6 once each, with the
        // uninterrupted run's losses, and summary.json counts all 6.
        string ckpt = NewFolder(), output = NewFolder();
        var straight = Train(Settings(6));
        var crashing = new TrainingRun(Small, Description, Settings(6, save: ckpt) with { SaveInterval = 3 }, output, line =>
        {
            if (line.StartsWith("iter      5/")) throw new IOException("the node went away");
        });
        Assert.Throws<IOException>(() => crashing.RunSingleDevice());
        Assert.Equal(1 + 5, File.ReadAllLines(Path.Combine(output, "metrics.csv")).Length);
        var resumed = new TrainingRun(Small, Description, Settings(6, save: ckpt, load: ckpt) with { SaveInterval = 3 }, output, _ => { }).RunSingleDevice();
        Assert.Equal(new long[] { 4, 5, 6 }, resumed.Select(r => r.Iteration));
        var rows = MetricsCsv.Read(Path.Combine(output, "metrics.csv"));
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, rows.Select(r => r.Iteration));
        Assert.Equal(straight.Select(r => r.Loss), rows.Select(r => r.Loss));
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json")));
        Assert.Equal(6, summary.RootElement.GetProperty("Iterations").GetInt64());
        Assert.Equal(straight[^1].Loss, summary.RootElement.GetProperty("FinalLoss").GetDouble());
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
        using var padded = new Trainer(Small, Description, Settings(1));
        using var unpadded = new Trainer(Small, Description, Settings(1) with { MakeVocabSizeDivisibleBy = 1 });
        Assert.Equal(47L * Small.HiddenSize, padded.Parameters - unpadded.Parameters);
        Assert.Equal(50304, padded.Model.VocabSize);
        Assert.Contains("--make-vocab-size-divisible-by is 0", TrainingRun.Check(Small, Description, Settings(1) with { MakeVocabSizeDivisibleBy = 0 }, 1).Single());
    }

    /// <summary>Megatron-core's CPU offloading on one device (the single-device trainer): the first layer's activations go to
    /// host memory and back, and three steps give the same losses and gradient norms to the bit.</summary>
    [Fact]
    public void CpuOffloadingOnOneDeviceKeepsTheBits()
    {
        var settings = Settings(3) with { MockData = true, DataPath = null };
        (float, float?)[] Steps(RunDescription d)
        {
            using var trainer = new Trainer(Small, d, settings);
            return [.. Enumerable.Range(0, 3).Select(i => trainer.Step(i, 1e-3, new RunStop())).Select(r => (r.Loss, r.GradNorm))];
        }
        Assert.True(Small.NumLayers > 1);
        Assert.Equal(Steps(Description), Steps(Description with { CpuOffloadingLayers = 1 }));
    }

    [Fact]
    public void EveryRecordedRowIsOnDiskBeforeTheRunEnds()
    {
        // A failure after the third iteration: its rows are in metrics.csv, and so are its summary and plots.
        string output = NewFolder();
        int seen = 0;
        var run = new TrainingRun(Small, Description, Settings(10), output, line =>
        {
            if (line.StartsWith("iter ") && ++seen == 3) throw new InvalidOperationException("crash");
        });
        Assert.Throws<InvalidOperationException>(() => run.RunSingleDevice());
        Assert.Equal(3, run.RecordedBeforeFailure);
        Assert.EndsWith($"(the 3 iterations done are in {output}: metrics.csv, summary.json, plots)", run.Kept);
        var lines = File.ReadAllLines(Path.Combine(output, "metrics.csv"));
        Assert.Equal(string.Join(',', MetricsCsv.Columns), lines[0]);
        Assert.Equal(4, lines.Length);
        for (int i = 1; i <= 3; i++)
        {
            var fields = lines[i].Split(',');
            Assert.Equal(MetricsCsv.Columns.Length, fields.Length);
            Assert.Equal(i, int.Parse(fields[0], CultureInfo.InvariantCulture));
            Assert.InRange(double.Parse(fields[5], CultureInfo.InvariantCulture), 5, 12);
        }
        using (var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json"))))
            Assert.Equal(3, summary.RootElement.GetProperty("Iterations").GetInt64());
        Assert.True(File.Exists(Path.Combine(output, "loss.png")));

        // Each row is flushed as it is written: a writer never closed, as when the process dies, has left it on disk.
        string path = Path.Combine(NewFolder() + ".csv");
        var csv = MetricsCsv.Rewrite(path, []);
        csv.Append(new IterationRecord(1, 10, 100, 0.1, null, 9.5, 1.5, 1e-3, 1 << 20, 1 << 20, 0.1, 5));
        using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
        var written = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, written.Length);
        Assert.StartsWith("1,10.000,100.0,", written[1]);
    }
}

/// <summary>Gradients of the recompute paths, in float64 (and bf16 with gradient-accumulation fusion).</summary>
[Collection("training")]
public class RecomputeTests
{
    private static readonly ModelSpec Tiny = ModelTests.Tiny() with { NumLayers = 2, HiddenSize = 16, FfnHiddenSize = 24, VocabSize = 32, SeqLength = 8 };

    private static Tensor Gradients(RecomputeSpec recompute, ModelSpec? spec = null, ScalarType dtype = ScalarType.Float64, bool gradientAccumulationFusion = false)
    {
        spec ??= Tiny;
        var (model, buffer) = ModelTests.Build(spec, dtype, recompute, seed: 11, gradientAccumulationFusion);
        Assert.Equal(gradientAccumulationFusion, buffer.FusedCount > 0);
        using var generator = new Generator(3);
        var tokens = randint(0, spec.VocabSize, new long[] { 2, spec.SeqLength }, generator: generator);
        model.forward(tokens, tokens.roll(1, 1)).backward();
        buffer.AccumulateMicroBatch();
        return buffer.MainGrads.clone();
    }

    [Fact]
    public void FullAndSelectiveRecomputeGiveTheSameGradientsAsNone()
    {
        var reference = Gradients(RecomputeSpec.None);
        Assert.True(reference.abs().sum().item<double>() > 0);
        foreach (var mode in new[] { RecomputeSpec.Selective, RecomputeSpec.FullUniform() })
            Assert.True(Gradients(mode).allclose(reference, rtol: 1e-12, atol: 1e-14), $"{mode} recompute changed the gradients");
    }

    /// <summary>
    /// Megatron-Kwai's recomputation changes what is kept, not what is computed. The SwiGLU recompute gives the same bits,
    /// and so does the norm recompute with LayerNorm (one libtorch operator, one input gradient: GPT here, with its biased
    /// linears, the bias inside the GEMM). libtorch's RMSNorm on the CPU is composite (x·rsqrt(mean(x²) + eps)·w), so the
    /// norm's input gets two gradients of its own, which the recomputation sums before the residual's is added, where
    /// autograd adds all three in arrival order: float64 rounding, 1e-12 relative.
    /// </summary>
    [Fact]
    public void KwaiRecomputeGivesTheGradientsOfNone()
    {
        var reference = Gradients(RecomputeSpec.None);
        foreach (var r in new[] { new RecomputeSpec(MlpActivation: true), RecomputeSpec.Selective with { MlpActivation = true } })
            Assert.True(Gradients(r).equal(reference).all().item<bool>(), $"{r} changed the gradients");
        foreach (var r in new[] { new RecomputeSpec(NormOutputs: true), RecomputeSpec.Kwai, RecomputeSpec.Selective with { NormOutputs = true, MlpActivation = true } })
        {
            var g = Gradients(r);
            Assert.False(g.equal(reference).all().item<bool>(), "the RMSNorm's input gradients are summed in another order; if libtorch's CPU RMSNorm became one operator, assert equality");
            Assert.True(g.allclose(reference, rtol: 1e-12, atol: 1e-16), $"{r} changed the gradients");
        }
        var gpt = ModelTests.Tiny(Activation.Gelu, Normalization.LayerNorm, PositionEmbedding.Learned, tied: true) with { NumLayers = 2, HiddenSize = 16, FfnHiddenSize = 24, VocabSize = 32, SeqLength = 8 };
        Assert.True(Gradients(new RecomputeSpec(NormOutputs: true), gpt).equal(Gradients(RecomputeSpec.None, gpt)).all().item<bool>(), "the norm recompute changed GPT's gradients");
    }

    /// <summary>
    /// Under bf16 with gradient-accumulation fusion the recomputing linears add their weight gradients into the float32 main
    /// gradients as the plain ones do, and the same bits come out, the RMSNorm's included: it computes in float32, so its input
    /// gets one bf16 gradient (the cast's) beside the residual's, and the sum of two does not depend on their order.
    /// </summary>
    [Fact]
    public void KwaiRecomputeUnderGradientAccumulationFusionGivesTheSameMainGradients()
    {
        var reference = Gradients(RecomputeSpec.None, dtype: ScalarType.BFloat16, gradientAccumulationFusion: true);
        Assert.True(reference.abs().sum().item<float>() > 0);
        foreach (var r in new[] { RecomputeSpec.Kwai, RecomputeSpec.Selective with { NormOutputs = true, MlpActivation = true } })
            Assert.True(Gradients(r, dtype: ScalarType.BFloat16, gradientAccumulationFusion: true).equal(reference).all().item<bool>(), $"{r} changed the main gradients");
    }

    [Fact]
    public void EveryRecomputeMethodGivesTheSameGradientsAsNone()
    {
        // Five layers: uniform groups of 2 leave a last group of 1 (Megatron's min(start + n, layers)); block recomputes the
        // first 3 and keeps the last 2 whole.
        var five = Tiny with { NumLayers = 5 };
        var reference = Gradients(RecomputeSpec.None, five);
        foreach (var r in new[] { RecomputeSpec.FullUniform(2), RecomputeSpec.FullUniform(5), new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 3),
                     new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 5) })
            Assert.True(Gradients(r, five).allclose(reference, rtol: 1e-12, atol: 1e-14), $"{r} changed the gradients");
    }

    [Fact]
    public void RecomputeGroupsAreMegatronsUniformAndBlockMethods()
    {
        LayerGroup G(int first, int count, bool recomputed) => new(first, count, recomputed);
        Assert.Equal([G(0, 2, true), G(2, 2, true), G(4, 1, true)], RecomputeGroups.Of(5, RecomputeSpec.FullUniform(2)));
        Assert.Equal([G(0, 1, true), G(1, 1, true), G(2, 1, true)], RecomputeGroups.Of(3, RecomputeSpec.FullUniform()));
        Assert.Equal([G(0, 1, true), G(1, 1, true), G(2, 1, false), G(3, 1, false)],
            RecomputeGroups.Of(4, new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 2)));
        Assert.Equal([G(0, 1, false), G(1, 1, false)], RecomputeGroups.Of(2, RecomputeSpec.Selective));
        Assert.Equal([G(0, 1, false), G(1, 1, false)], RecomputeGroups.Of(2, RecomputeSpec.None with { NumLayers = 2 }));
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
        using var step = eps.ToScalar();
        for (int i = 0; i < flat.shape[0]; i += 7)
        {
            var plus = flat.clone();
            plus.narrow(0, i, 1).add_(step, One);
            var minus = flat.clone();
            minus.narrow(0, i, 1).sub_(step);
            double numeric = (F(plus.view(x.shape)).item<double>() - F(minus.view(x.shape)).item<double>()) / (2 * eps);
            Assert.Equal(numeric, analytic[i].item<double>(), 6);
        }
    }
}
