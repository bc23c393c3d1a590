using System.Text.Json;
using Harness.Cli.Commands;
using Harness.Executor.Data;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>
/// Blended datasets as Megatron-core builds them (megatron/core/datasets: utils.py get_blend_from_list and normalize,
/// helpers.cpp build_blending_indices, blended_megatron_dataset_builder.py _get_size_per_split_per_dataset; training.py
/// get_train_valid_test_num_samples): the list read, the greedy order, the shares' sizes with the 0.5% margin, and a run's
/// record naming the datasets and weights.
/// </summary>
[Collection("Console")]
public class BlendTests
{
    [Fact]
    public void TheListIsReadAsMegatronReadsIt()
    {
        Assert.Equal(new DataBlend(["a", "b"], [0.3, 0.7]), DataBlend.Parse("--data-path", ["0.3", "a", "0.7", "b"]).Blend);
        Assert.Equal(new DataBlend(["a", "b", "c"], null), DataBlend.Parse("--data-path", ["a", "b", "c"]).Blend);
        Assert.Equal(DataBlend.Single("a"), DataBlend.Parse("--data-path", ["a"]).Blend);
        Assert.Equal("--data-path '0.3 a 0.7' is neither weight-prefix pairs (W1 PREFIX1 W2 PREFIX2 ...) nor a list of prefixes.",
            DataBlend.Parse("--data-path", ["0.3", "a", "0.7"]).Problem);
        Assert.Equal("--train-data-path gives b the weight -1; a weight is a finite number above 0.",
            DataBlend.Parse("--train-data-path", ["1", "a", "-1", "b"]).Problem);
        Assert.Equal("--data-path gives a the weight 0; a weight is a finite number above 0.", DataBlend.Parse("--data-path", ["0", "a"]).Problem);
    }

    /// <summary>Weights 1/4 and 3/4, by hand: sample k goes to the dataset with the largest w·max(k, 1) − n (the first on a tie).
    /// k=0: 0.25, 0.75 -> B; k=1: 0.25, -0.25 -> A; k=2: -0.5, 0.5 -> B; k=3: -0.25, 0.25 -> B; k=4: 0, 0 -> A (tie);
    /// k=5: -0.75, 0.75 -> B; k=6, 7 -> B; k=8: 0, 0 -> A.</summary>
    [Fact]
    public void SamplesFollowMegatronsGreedyOrder()
    {
        var indices = new BlendingIndices([0.25, 0.75]);
        (int, long)[] expected = [(1, 0), (0, 0), (1, 1), (1, 2), (0, 1), (1, 3), (1, 4), (1, 5), (0, 2)];
        Assert.Equal(expected, Enumerable.Range(0, 9).Select(k => indices.At(k)).ToArray());
        // Seeking back walks the order again from the start; seeking forward skips ahead.
        Assert.Equal((1, 3), indices.At(5));
        Assert.Equal((0, 2), indices.At(8));
    }

    /// <summary>numpy sums eight or more float64 terms pairwise: 1e16 + 1 is 1e16 (the spacing there is 2), so one after another the
    /// ones are lost, but ((1e16 + 1) + (1 + 1)) + ((1 + 1) + (1 + 1)) keeps six of them.</summary>
    [Fact]
    public void WeightsAreSummedInNumpysOrder()
    {
        Assert.Equal(1e16 + 6, BlendingIndices.NumpySum([1e16, 1, 1, 1, 1, 1, 1, 1]));
        Assert.Equal(1e16, BlendingIndices.NumpySum([1e16, 1, 1, 1, 1, 1, 1]));
        Assert.Equal([0.25, 0.75], BlendingIndices.Normalize([1, 3]));
    }

    /// <summary>Weights 1 and 2 (1/3, 2/3), 10 iterations of global batch 4, --eval-interval 5, --eval-iters 2: the training share
    /// targets 40 samples and plans ceil(40/3) = 14 and ceil(80/3) = 27 (41 in all), building ceil(14 · 1.005) = 15 and
    /// ceil(27 · 1.005) = 28; the validation share targets (10/5 + 1) · 2 · 4 = 24: 8 and 16, built 9 and 17.</summary>
    [Fact]
    public void SharesAreSizedWithMegatronsMargin()
    {
        var settings = new RunSettings(TrainIters: 10, EvalInterval: 5, EvalIters: 2);
        var blend = new DataBlend(["a", "b"], [1, 2]);
        Assert.Equal(40, BlendPlan.TargetSamples(DataSplit.Share.Train, settings, 4));
        Assert.Equal(24, BlendPlan.TargetSamples(DataSplit.Share.Valid, settings, 4));
        Assert.Equal(8, BlendPlan.TargetSamples(DataSplit.Share.Test, settings, 4));
        var train = BlendPlan.Of(DataSplit.Share.Train, blend, [100, 100], 40);
        Assert.Equal(41, train.Samples);
        Assert.Equal([(14L, 15L), (27L, 28L)], train.Datasets.Select(d => (d.Samples, d.Built)));
        Assert.Equal([1 / 3.0, 2 / 3.0], train.Datasets.Select(d => d.Weight));
        var valid = BlendPlan.Of(DataSplit.Share.Valid, blend, [100, 100], 24);
        Assert.Equal([(8L, 9L), (16L, 17L)], valid.Datasets.Select(d => (d.Samples, d.Built)));
        // Prefixes alone weigh each dataset by its samples in one epoch, capped there.
        var bySize = BlendPlan.Of(DataSplit.Share.Train, new DataBlend(["a", "b"], null), [10, 30], 100);
        Assert.Equal(40, bySize.Samples);
        Assert.Equal([0.25, 0.75], bySize.Datasets.Select(d => d.Weight));
    }

    /// <summary>Two datasets whose tokens tell them apart (A's below 100, B's from 1000): a run's samples come from them in the
    /// greedy order of weights 1 and 3, each dataset's samples in its own seeded order.</summary>
    [Fact]
    public void ABlendedRunReadsTheDatasetsInTheGreedyOrder()
    {
        string dir = Directory.CreateTempSubdirectory("harness-blend-").FullName;
        try
        {
            var (a, b) = (Dataset(dir, "a", 0), Dataset(dir, "b", 1000));
            var settings = new RunSettings(DataPath: new DataBlend([a, b], [1, 3]), TrainIters: 3);
            using var data = SplitData.Open(settings, 2000, 4, 3);
            var sampler = new GptSampler(data.Train, 4);
            var tokens = new long[9 * 5];
            sampler.Next(9, tokens);
            var from = Enumerable.Range(0, 9).Select(i => tokens[i * 5] < 1000 ? 0 : 1);
            Assert.Equal([1, 0, 1, 1, 0, 1, 1, 1, 0], from);
            // B's samples are B's own dataset's, in its order.
            var alone = new GptSampler(new GptDataset(new IndexedDataset(b), 4, settings.Seed), 4);
            var first = new long[5];
            alone.Next(1, first);
            Assert.Equal(first, tokens[..5]);
            var train = Assert.Single(data.Blends);
            // 3 iterations of 3 samples: ceil(9/4) + ceil(27/4) = 3 + 7.
            Assert.Equal(("train", 10L), (train.Split, train.Samples));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>--split cuts every dataset of the blend, and each share blends its datasets' shares: with 1,1 the first two of
    /// four documents of ten tokens train and the last two validate, in both datasets, at weights 1 and 3 in both shares.</summary>
    [Fact]
    public void TheSplitCutsEveryDatasetOfTheBlend()
    {
        string dir = Directory.CreateTempSubdirectory("harness-blend-").FullName;
        try
        {
            string Documents(string name, int first)
            {
                string prefix = Path.Combine(dir, name);
                using var builder = new IndexedDatasetBuilder(prefix, 2000);
                for (int d = 0; d < 4; d++)
                {
                    builder.Add(Enumerable.Range(first + 10 * d, 10).ToArray());
                    builder.EndDocument();
                }
                builder.Finish();
                return prefix;
            }
            var (a, b) = (Documents("a", 0), Documents("b", 1000));
            var settings = new RunSettings(DataPath: new DataBlend([a, b], [1, 3]), Split: new DataSplit(1, 1, 0), TrainIters: 4, EvalInterval: 2, EvalIters: 1);
            using var data = SplitData.Open(settings, 2000, 4, 2);
            foreach (var (share, low) in new[] { (data.Train, 0), (data.Valid!, 20) })
            {
                var tokens = new long[8 * 5];
                new GptSampler(share, 4).Next(8, tokens);
                var firsts = Enumerable.Range(0, 8).Select(i => tokens[i * 5]).ToList();
                Assert.Equal([1, 0, 1, 1, 0, 1, 1, 1], firsts.Select(t => t < 1000 ? 0 : 1));
                // Every token comes from the share's documents: [low, low + 20) of each dataset.
                Assert.All(tokens, t => Assert.InRange(t % 1000, low, low + 19));
            }
            // Targets: train 4 · 2 = 8 (planned 2 + 6), valid (4/2 + 1) · 1 · 2 = 6 (planned ceil(1.5) + ceil(4.5) = 2 + 5).
            Assert.Equal([("train", 8L), ("valid", 7L)], data.Blends.Select(x => (x.Split, x.Samples)));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static readonly string[] Tiny =
    [
        "--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "4", "--vocab-size", "2000",
        "--train-iters", "2", "--micro-batch-size", "1", "--global-batch-size", "2", "--device", "cpu",
    ];

    [Fact]
    public void ARunRecordsTheDatasetsAndWeightsItBlended()
    {
        string dir = Directory.CreateTempSubdirectory("harness-blend-").FullName;
        try
        {
            var (a, b, c) = (Dataset(dir, "a", 0), Dataset(dir, "b", 1000), Dataset(dir, "c", 500));
            string output = Path.Combine(dir, "out");
            var (code, _, error) = ConsoleCapture.Run(RunCommand.Run,
                [.. Tiny, "--train-data-path", "1", a, "3", b, "--valid-data-path", c, "--eval-iters", "1", "--out", output]);
            Assert.True(code == 0, error);
            using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json")));
            var settings = summary.RootElement.GetProperty("Settings");
            Assert.Equal(["1", a, "3", b], settings.GetProperty("TrainDataPath").EnumerateArray().Select(e => e.GetString()));
            Assert.Equal([c], settings.GetProperty("ValidDataPath").EnumerateArray().Select(e => e.GetString()));
            var data = summary.RootElement.GetProperty("Data").EnumerateArray().ToList();
            Assert.Equal(["train", "valid"], data.Select(d => d.GetProperty("Split").GetString()));
            // 2 iterations of 2: 4 samples, 1 from a and 3 from b, built ceil(1.005) = 2 and ceil(3.015) = 4.
            var train = data[0].GetProperty("Datasets").EnumerateArray()
                .Select(d => (d.GetProperty("Prefix").GetString(), d.GetProperty("Weight").GetDouble(), d.GetProperty("Samples").GetInt64(), d.GetProperty("Built").GetInt64()));
            Assert.Equal([(a, 0.25, 1L, 2L), (b, 0.75, 3L, 4L)], train);
            // The record reads back (harness validate reads the settings), as does a record's single prefix from before blends.
            Assert.Equal(new DataBlend([a, b], [1, 3]), settings.GetProperty("TrainDataPath").Deserialize<DataBlend>());
            Assert.Equal(DataBlend.Single("x_text_document"), JsonSerializer.Deserialize<DataBlend>("\"x_text_document\""));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void BadListsAreOneSentence()
    {
        string dir = Directory.CreateTempSubdirectory("harness-blend-").FullName;
        try
        {
            string a = Dataset(dir, "a", 0), missing = Path.Combine(dir, "missing");
            (int, string) Run(params string[] extra)
            {
                var (code, _, error) = ConsoleCapture.Run(RunCommand.Run, [.. Tiny, .. extra, "--out", Path.Combine(dir, "out")]);
                return (code, error.Trim());
            }
            Assert.Equal((2, "harness run: --data-path '0.3 a 0.7' is neither weight-prefix pairs (W1 PREFIX1 W2 PREFIX2 ...) nor a list of prefixes."),
                Run("--data-path", "0.3", "a", "0.7"));
            Assert.Equal((2, $"harness run: --data-path gives {a} the weight -2; a weight is a finite number above 0."),
                Run("--data-path", "1", a, "-2", a));
            var (code, error) = Run("--data-path", "1", a, "1", missing);
            Assert.Equal(2, code);
            Assert.Equal($"harness run: {missing}.idx does not exist (--data-path takes the prefix of a .bin/.idx pair).", error);
            Assert.Equal((2, "harness run: --split 9,1,0 cuts --data-path's datasets; --train-data-path, --valid-data-path and --test-data-path name each share's own: remove --split."),
                Run("--train-data-path", a, "--split", "9,1,0"));
            Assert.Equal((2, "harness run: Give one data source: --data-path, --mock-data, or --train-data-path (with --valid-data-path, --test-data-path)."),
                Run("--train-data-path", a, "--data-path", a));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>A dataset of one document of 41 tokens first, first + 1, ...</summary>
    private static string Dataset(string dir, string name, int first)
    {
        string prefix = Path.Combine(dir, name);
        using var builder = new IndexedDatasetBuilder(prefix, 2000);
        builder.Add(Enumerable.Range(first, 41).ToArray());
        builder.EndDocument();
        builder.Finish();
        return prefix;
    }
}
