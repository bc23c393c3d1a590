using Harness.Cli.Commands;
using Harness.Executor.Training;

namespace Harness.Tests.Executor;

/// <summary>`harness run` folders it cannot use (a file where a folder belongs): one sentence and exit 2 before training,
/// not an IOException after it.</summary>
[Collection("Console")]
public class RunCommandUserErrorTests
{
    private static readonly string[] Tiny =
    [
        "--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "8",
        "--vocab-size", "64", "--mock-data", "--train-iters", "1", "--micro-batch-size", "1", "--device", "cpu",
    ];

    private static (int Code, string Error) Run(params string[] extra)
    {
        var err = new StringWriter();
        var old = Console.Error;
        Console.SetError(err);
        try { return (RunCommand.Run([.. Tiny, .. extra]), err.ToString().Trim()); }
        finally { Console.SetError(old); }
    }

    [Fact]
    public void ProfileFlagsAreCheckedBeforeAnythingRuns()
    {
        Assert.Equal((2, "harness run: --profile marks a CUDA profiler range; it needs --device cuda."), Run("--profile", "--profile-step-end", "1", "--profile-step-start", "0"));
        Assert.Equal((2, "harness run: --profile-step-start/--profile-step-end need --profile."), Run("--profile-step-start", "3"));
        var (code, error) = Run("--profile", "--device", "cuda", "--nproc-per-node", "2");
        Assert.Equal(2, code);
        Assert.Contains("--profile opens the profiler range in single-device runs", error);
    }

    [Fact]
    public void DropoutAndVocabularyPaddingOutOfRangeAreOneSentence()
    {
        Assert.Equal((2, "harness run: --hidden-dropout is 1.5; a dropout probability is in [0, 1)."), Run("--hidden-dropout", "1.5"));
        Assert.Equal((2, "harness run: --make-vocab-size-divisible-by is 0; it must be at least 1."), Run("--make-vocab-size-divisible-by", "0"));
    }

    [Fact]
    public void ARunRefusedAfterItsOutputCheckLeavesNoEmptyFolderButKeepsTheUsersOwn()
    {
        // A --data-path that does not exist is found only when the run starts, after --out was made and checked.
        string root = Path.Combine(TestTemp.Root, $"harness-out-{Guid.NewGuid():N}");
        string made = Path.Combine(root, "new"), own = Path.Combine(root, "own");
        Directory.CreateDirectory(own);
        try
        {
            string[] missingData = [.. Tiny.Where(a => a != "--mock-data"), "--data-path", Path.Combine(root, "missing_text_document")];
            var err = new StringWriter();
            var old = Console.Error;
            Console.SetError(err);
            try
            {
                Assert.Equal(2, RunCommand.Run([.. missingData, "--out", made]));
                Assert.Contains("missing_text_document", err.ToString());
                Assert.False(Directory.Exists(made));
                Assert.Equal(2, RunCommand.Run([.. missingData, "--out", own]));
                Assert.True(Directory.Exists(own));
            }
            finally { Console.SetError(old); }
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void OutNamingAnExistingFileIsAUserError()
    {
        string file = Path.GetTempFileName();
        try
        {
            var (code, error) = Run("--out", file);
            Assert.Equal(2, code);
            Assert.StartsWith($"harness run: --out '{file}' cannot be used as a folder (", error);
            Assert.EndsWith("); pass a writable folder.", error);
            Assert.DoesNotContain("\n", error);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void SaveNamingAnExistingFileIsAUserError()
    {
        string file = Path.GetTempFileName();
        string dir = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}");
        try
        {
            var (code, error) = Run("--out", dir, "--save", file);
            Assert.Equal(2, code);
            Assert.Equal($"harness run: --save '{file}' is a file; it must name a checkpoint folder (new or existing).", error);
            Assert.False(Directory.Exists(dir), "nothing should run, so no records folder");
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void LoadWithADamagedTrackerOrMetaIsAUserError()
    {
        string root = Path.Combine(TestTemp.Root, $"harness-load-{Guid.NewGuid():N}");
        string outDir = Path.Combine(root, "out");
        Directory.CreateDirectory(Path.Combine(root, "iter_0000002"));
        try
        {
            File.WriteAllText(Path.Combine(root, "latest_checkpointed_iteration.txt"), "garbage\n");
            var (code, error) = Run("--out", outDir, "--load", root);
            Assert.Equal(2, code);
            Assert.Equal($"harness run: {Path.Combine(root, "latest_checkpointed_iteration.txt")} holds 'garbage', not an iteration number; " +
                         "it is not a checkpoint folder written by --save.", error);

            File.WriteAllText(Path.Combine(root, "latest_checkpointed_iteration.txt"), "2");
            File.WriteAllText(Path.Combine(root, "iter_0000002", "meta.json"), "{ not json");
            (code, error) = Run("--out", outDir, "--load", root);
            Assert.Equal(2, code);
            Assert.Equal($"harness run: {Path.Combine(root, "iter_0000002")}/meta.json is not the JSON --save writes; the checkpoint is damaged.", error);
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void MicroBatchZeroIsOneSentence()
    {
        var (code, error) = Run("--micro-batch-size", "0", "--out", Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}"));
        Assert.Equal(2, code);
        Assert.Equal("harness run: --micro-batch-size is 0; it must be at least 1.", error);
    }

    /// <summary>Tiny's flags with the shipped corpus in place of synthetic tokens.</summary>
    private static string[] OnCorpus(params string[] extra) =>
        [.. Tiny.Where(a => a != "--mock-data"), "--data-path", DefaultRun.DataPath, .. extra];

    private static (int Code, string Error) RunExactly(string[] args)
    {
        var err = new StringWriter();
        var old = Console.Error;
        Console.SetError(err);
        try { return (RunCommand.Run(args), err.ToString().Trim()); }
        finally { Console.SetError(old); }
    }

    [Fact]
    public void GptTwoDataUnderASmallVocabularyIsOneSentenceOnEveryLayout()
    {
        // The first sample's first id past 64 (which id depends on the sample's length): one sentence naming it.
        const string pattern = @"^harness run: the data holds token id \d{3,5}, outside --vocab-size 64; " +
                               @"use a model whose vocabulary covers the tokenizer's \(50257 for GPT-2 BPE\)\.";
        string serial = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}");
        var (code, error) = RunExactly(OnCorpus("--out", serial));
        Assert.Equal(2, code);
        Assert.Matches(pattern + "$", error); // no iteration was recorded, so nothing is kept
        Directory.Delete(serial, recursive: true);

        // Two data-parallel ranks read the same batch: the same sentence once, not a libtorch index error per rank.
        string parallel = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}");
        (code, error) = RunExactly(OnCorpus("--nproc-per-node", "2", "--global-batch-size", "2", "--out", parallel));
        Assert.Equal(2, code);
        Assert.Matches(pattern + "$", error);
        Directory.Delete(parallel, recursive: true);
    }

    [Fact]
    public void AParallelRunFailingMidwayKeepsWhatItRecorded()
    {
        // Under a 45000-entry vocabulary the corpus's batches are in range for 7 iterations, then one holds id 50256: the
        // job ends with that sentence, and rank 0 has kept the 7 iterations' rows, summary.json and plots.
        string dir = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}");
        try
        {
            string[] args = [.. OnCorpus("--nproc-per-node", "2", "--global-batch-size", "2", "--out", dir)];
            args[Array.IndexOf(args, "--vocab-size") + 1] = "45000";
            args[Array.IndexOf(args, "--train-iters") + 1] = "30";
            var (code, error) = RunExactly(args);
            Assert.Equal(2, code);
            Assert.EndsWith($"outside --vocab-size 45000; use a model whose vocabulary covers the tokenizer's (50257 for GPT-2 BPE). " +
                            $"(the 7 iterations done are in {dir}: metrics.csv, summary.json, plots)", error);
            Assert.Equal(1 + 7, File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Length);
            using var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
            Assert.Equal(7, summary.RootElement.GetProperty("Iterations").GetInt64());
            Assert.True(File.Exists(Path.Combine(dir, "loss.png")));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ADamagedIndexOnAParallelRunIsOneSentence()
    {
        string prefix = Path.Combine(TestTemp.Root, $"harness-bad-{Guid.NewGuid():N}");
        File.WriteAllBytes(prefix + ".idx", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        File.WriteAllBytes(prefix + ".bin", new byte[64]);
        try
        {
            var args = Tiny.Where(a => a != "--mock-data").Concat(["--data-path", prefix, "--nproc-per-node", "2", "--global-batch-size", "2",
                "--out", Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}")]).ToArray();
            var (code, error) = RunExactly(args);
            Assert.Equal(2, code);
            Assert.Equal($"harness run: {prefix}.idx is not a Megatron indexed dataset index: its first 9 bytes are not MMIDIDX\\0\\0.", error);
        }
        finally
        {
            File.Delete(prefix + ".idx");
            File.Delete(prefix + ".bin");
        }
    }

    [Fact]
    public void UnwritableOutputsAreOneSentenceBeforeAnyWork()
    {
        string file = Path.GetTempFileName();
        string dir = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}");
        try
        {
            foreach (var (flag, path) in new[] { ("--save", "/proc/harness-ck"), ("--save", Path.Combine(file, "ck")), ("--out", "/proc/harness-out"), ("--out", Path.Combine(file, "out")),
                ("--tensorboard-dir", "/proc/harness-tb"), ("--tensorboard-dir", Path.Combine(file, "tb")) })
            {
                var (code, error) = Run(flag == "--out" ? ["--out", path] : ["--out", dir, flag, path]);
                Assert.Equal(2, code);
                Assert.StartsWith($"harness run: {flag} '{path}' cannot be used as a folder (", error);
                Assert.EndsWith("); pass a writable folder.", error);
                Assert.DoesNotContain("\n", error);
                Assert.False(File.Exists(Path.Combine(dir, "metrics.csv")), "nothing should run");
            }
            var (validateCode, _, validateError) = ConsoleCapture.Run(ValidateCommand.Run, TestTemp.Root, "--csv", "/proc/harness-v.csv");
            Assert.Equal(2, validateCode);
            Assert.StartsWith("harness validate: --csv '/proc/harness-v.csv' cannot be written (", validateError.Trim());
            Assert.DoesNotContain("\n", validateError.Trim());
        }
        finally
        {
            File.Delete(file);
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ANewRunDoesNotReplaceAnotherRunsRecordsOrCheckpoints()
    {
        string root = Path.Combine(TestTemp.Root, $"harness-run-{Guid.NewGuid():N}"), output = Path.Combine(root, "out"), ckpt = Path.Combine(root, "ckpt");
        try
        {
            Assert.Equal((0, ""), Run("--out", output, "--save", ckpt));
            Assert.Equal((2, $"harness run: --out '{output}' already holds a run's metrics.csv; pass another --out, --load its checkpoint to continue it, or --overwrite to replace it."),
                Run("--out", output));
            Assert.Equal((2, $"harness run: --save '{ckpt}' already holds checkpoints; pass --load {ckpt} to continue from them, another --save, or --overwrite to save beside them."),
                Run("--out", Path.Combine(root, "other"), "--save", ckpt));
            // A checkpoint at --train-iters leaves nothing to train.
            Assert.Equal((2, $"harness run: --load '{ckpt}' holds iteration 1, at or past --train-iters 1: nothing is left to train; raise --train-iters to train on."),
                Run("--out", output, "--save", ckpt, "--load", ckpt));
            // Continuing them, or --overwrite, is allowed.
            string[] longer = [.. Tiny.Select(a => a), "--out", output, "--save", ckpt, "--load", ckpt];
            longer[Array.IndexOf(longer, "--train-iters") + 1] = "2";
            Assert.Equal((0, ""), RunExactly(longer));
            Assert.Equal("2", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
            Assert.Equal((0, ""), Run("--out", output, "--save", ckpt, "--overwrite"));
            Assert.Equal("1", File.ReadAllText(Path.Combine(ckpt, "latest_checkpointed_iteration.txt")));
            Assert.Equal(1 + 1, File.ReadAllLines(Path.Combine(output, "metrics.csv")).Length);
            // A metrics.csv with only its header (a run that failed before its first iteration) holds no run.
            string failed = Path.Combine(root, "failed");
            Directory.CreateDirectory(failed);
            File.WriteAllText(Path.Combine(failed, "metrics.csv"), string.Join(',', Harness.Executor.Training.Records.MetricsCsv.Columns) + "\n");
            Assert.Equal((0, ""), Run("--out", failed));
        }
        finally { Directory.Delete(root, recursive: true); }
    }
}
