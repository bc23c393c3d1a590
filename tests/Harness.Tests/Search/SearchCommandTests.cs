using Harness.Megatron;
using System.Globalization;
using System.Text.Json;
using Harness.Cli.Arguments;
using Harness.Cli.Commands;
using Harness.Search;
using Harness.Simulator.Specs;

namespace Harness.Tests.Search;

/// <summary>`harness search` end to end: JSON, the CSV of every evaluation, exit codes and messages.</summary>
[Collection("Console")]
public class SearchCommandTests : IDisposable
{
    private readonly string _out = Path.Combine(TestTemp.Root, "harness-search-test-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_out)) Directory.Delete(_out, recursive: true);
    }

    private static (int Code, string Out, string Err) Run(string args) =>
        ConsoleCapture.Run(SearchCommand.Run, args.Split(' ', StringSplitOptions.RemoveEmptyEntries));

    [Fact]
    public void JsonTopOneIsTheMaximumOverTheCsv()
    {
        var (code, output, err) = Run($"--model caat-130m --gpu h800 --gpus 8 --global-batch-size 16 --bf16 --top 3 --json --out {_out}");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var top = doc.RootElement.GetProperty("top");
        Assert.Equal(3, top.GetArrayLength());
        foreach (var entry in top.EnumerateArray())
        {
            foreach (var key in new[] { "step_time_s", "tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu", "hfu", "peak_memory_bytes", "fits", "breakdown" })
                Assert.True(entry.TryGetProperty(key, out _), key);
            Assert.True(entry.GetProperty("fits").GetBoolean());
            Assert.StartsWith("--tensor-model-parallel-size", entry.GetProperty("config").GetProperty("megatron_args").GetString());
        }
        var search = doc.RootElement.GetProperty("search");
        Assert.Equal(0, search.GetProperty("bound_violations").GetInt64());

        var lines = File.ReadAllLines(Path.Combine(_out, "evaluated.csv"));
        var header = lines[0].Split(',').ToList();
        int tokens = header.IndexOf("tokens_per_s_per_gpu"), fits = header.IndexOf("fits");
        Assert.True(tokens >= 0 && fits >= 0, lines[0]);
        Assert.Equal(search.GetProperty("evaluated").GetInt64(), lines.Length - 1);
        double maxOverCsv = lines.Skip(1).Select(l => l.Split(','))
            .Where(f => bool.Parse(f[fits])).Max(f => double.Parse(f[tokens], CultureInfo.InvariantCulture));
        Assert.Equal(maxOverCsv, top[0].GetProperty("tokens_per_s_per_gpu").GetDouble(), 1e-9 * maxOverCsv);
        Assert.True(File.Exists(Path.Combine(_out, "throughput-vs-memory.png")));
    }

    /// <summary>The winner's tokens/s per GPU of a search over <paramref name="space"/>.</summary>
    private double BestThroughput(string space)
    {
        var (code, output, err) = Run($"{space} --top 1 --json --out {_out}");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        return doc.RootElement.GetProperty("top")[0].GetProperty("tokens_per_s_per_gpu").GetDouble();
    }

    [Fact]
    public void TheLaunchsHardwareQueuesReachEveryConfiguration()
    {
        // Pipelined tensor-parallel layouts only: with Megatron's one queue their overlapped p2p hides nothing, with CUDA's
        // eight it does, so the best of the same space is no slower, and faster where pipeline transfers cross nodes.
        double Best(string extra) => BestThroughput(
            $"--model llama-65b --gpu h800 --gpus 64 --global-batch-size 64 --tensor-model-parallel-size 4 --pipeline-model-parallel-size 8 {extra}");
        double oneQueue = Best(""), eight = Best("--cuda-device-max-connections 8");
        Assert.True(eight > oneQueue, $"{eight} vs {oneQueue}");
        Assert.Equal(oneQueue, Best("--cuda-device-max-connections 1"), 9);
        var (bad, _, error) = Run($"--model llama-65b --gpu h800 --gpus 64 --global-batch-size 64 --cuda-device-max-connections 64 --out {_out}");
        Assert.Equal(2, bad);
        Assert.Contains("--cuda-device-max-connections 64 is out of range", error);
    }

    [Fact]
    public void KwaisExposedContextParallelExchangeReachesEveryConfiguration()
    {
        // Context-parallel layouts only: with Megatron-Kwai's --no-context-parallel-comm-overlap-gemm the K/V exchange is
        // on the critical path of every one of them, so the best of the same space is slower.
        double Best(string extra) => BestThroughput(
            $"--model llama2-70b --seq-length 8192 --gpu h800 --gpus 64 --global-batch-size 128 --context-parallel-size 2,4 {extra}");
        Assert.True(Best("--no-context-parallel-comm-overlap-gemm") < Best(""));
    }

    [Fact]
    public void CpCommTypeListNarrowsTheExchangesAndAWrongWordIsNamed()
    {
        var (input, cl) = Read("--model caat-1b --gpus 8 --global-batch-size 16 --cp-comm-type a2a,all_gather");
        Assert.Empty(cl.Errors);
        Assert.Equal([ContextParallelCommType.A2a, ContextParallelCommType.AllGather], input!.Space.Constraints.ContextParallelComm);
        var (bad, badCl) = Read("--model caat-1b --gpus 8 --global-batch-size 16 --cp-comm-type a2a,ring");
        Assert.Null(bad);
        Assert.Contains("--cp-comm-type 'ring' is not one of p2p, allgather (all_gather), a2a, a2a+p2p.", badCl.Errors);
        var (pasted, pastedCl) = Read("--model caat-1b --gpus 8 --global-batch-size 16 --cp-comm-type a2a+p2p --hierarchical-context-parallel-sizes 2 2");
        Assert.Null(pasted);
        Assert.Contains("--hierarchical-context-parallel-sizes 2 2 does not narrow the search: it tries a2a+p2p with every all-to-all size that divides c and the heads; narrow with --cp-comm-type and --context-parallel-size.", pastedCl.Errors);
    }

    [Fact]
    public void NoValidFactorizationSaysWhyAndExits2()
    {
        // 11 GPUs: 96 layers on 11 stages leave no split with the first and last stages within a layer of the middle ones
        // (k = 9 needs 3 layers fewer at the ends); 256 is not divisible by 11 data-parallel ranks; 96 heads by 11.
        var (code, _, err) = Run($"--model llama-175b --gpu h800 --gpus 11 --global-batch-size 256 --out {_out}");
        Assert.Equal(2, code);
        Assert.Contains("no valid configuration", err);
        Assert.Contains("--global-batch-size 256 is not divisible by --micro-batch-size 1 x data-parallel size 11", err);
        Assert.Contains("--num-layers 96 is not divisible by --pipeline-model-parallel-size 11", err);
    }

    /// <summary>30 layers do not divide over 4 stages: the search tries the splits with the first and last stages within a
    /// layer of the middle ones (8, 7, 7, 8 and 7, 8, 8, 7), and, interleaved, the embedding and loss counted as layers (32
    /// over 4). Without interleaving the lighter ends win; with it, the counted ends in 8 chunks of one layer per rank (a
    /// smaller bubble). Either way the winner's flags read back into the configuration the search evaluated.</summary>
    [Theory]
    [InlineData("--num-layers-per-virtual-pipeline-stage none", "--decoder-first-pipeline-num-layers 7 --decoder-last-pipeline-num-layers 7")]
    [InlineData("", "--num-layers-per-virtual-pipeline-stage 1 --account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split")]
    public void UnevenStagesWinWhereTheLayersDoNotDivideAndTheWinnerRoundTrips(string constraint, string winner)
    {
        var (code, output, err) = Run($"--model llama-7b --num-layers 30 --gpu h800 --gpus 4 --pipeline-model-parallel-size 4 --global-batch-size 16 --bf16 {constraint} --top 1 --json --out {_out}");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var top = doc.RootElement.GetProperty("top")[0];
        var config = top.GetProperty("config");
        Assert.Equal([7, 8, 8, 7], config.GetProperty("layers_per_stage").EnumerateArray().Select(e => e.GetInt32()));
        string args = config.GetProperty("megatron_args").GetString()!;
        Assert.Contains(winner, args);
        var cl = CommandLine.Parse([.. "--model llama-7b --num-layers 30 --gpu h800 --gpus 4".Split(' '), .. args.Split(' ')], SimulationFlags.Flags);
        var simulated = SimulationFlags.Read(cl)!;
        Assert.Empty(cl.Errors);
        var estimate = Harness.Simulator.Estimator.Estimate(simulated.Model, simulated.Cluster, simulated.Config);
        Assert.Equal(top.GetProperty("tokens_per_s_per_gpu").GetDouble(), estimate.TokensPerSecondPerGpu, 1e-9 * estimate.TokensPerSecondPerGpu);
    }

    [Fact]
    public void NothingFitsNamesTheNearMissesAndExits2()
    {
        var (code, _, err) = Run($"--model caat-1b --gpu h800 --gpus 8 --global-batch-size 16 --bf16 --memory-limit 2500MiB --out {_out}");
        Assert.Equal(2, code);
        Assert.Contains("fits in 2.44 GiB per GPU", err);
        Assert.Contains("closest to fitting", err);
    }

    [Fact]
    public void BadArgumentsNameTheValueAndExit2()
    {
        var (code, _, err) = Run("--model caat-1b --gpus 8 --tensor-model-parallel-size 2,x --recompute fulll --memory-limit 70QB --top 0");
        Assert.Equal(2, code);
        Assert.Contains("--global-batch-size is required", err);
        Assert.Contains("--tensor-model-parallel-size value 'x' is not valid", err);
        Assert.Contains("--recompute value 'fulll' is not valid", err);
        Assert.Contains("--memory-limit '70QB' is not a size", err);
        Assert.Contains("--top is 0", err);
    }

    [Fact]
    public void AnAttentionBackendTheGpuLacksIsRefusedBeforeSearching()
    {
        var (input, cl) = Read("--model gpt-1.7b --gpu v100-32gb --gpus 8 --global-batch-size 64 --fp16 --attention-backend fused");
        Assert.Null(input);
        Assert.Contains(cl.Errors, e => e.StartsWith("--attention-backend fused: the v100-32gb has no cuDNN fused attention"));
        // auto resolves per GPU: unfused on a V100, so every configuration is costed with the score matrix in memory.
        Assert.NotNull(Read("--model gpt-1.7b --gpu v100-32gb --gpus 8 --global-batch-size 64 --fp16 --attention-backend auto").Input);
    }

    private static (SearchInput? Input, CommandLine Cl) Read(string args)
    {
        var flags = ModelFlags.Flags.Concat(ClusterFlags.Flags).Concat(SearchArguments.Flags).ToArray();
        var cl = CommandLine.Parse(args.Split(' ', StringSplitOptions.RemoveEmptyEntries), flags);
        var model = ModelFlags.Read(cl)!;
        var cluster = ClusterFlags.Read(cl)!;
        return (SearchArguments.Read(cl, model, cluster), cl);
    }

    [Theory]
    [InlineData("--recompute-granularity full", RecomputeKind.Full)]
    [InlineData("--recompute-granularity selective", RecomputeKind.Selective)]
    [InlineData("--recompute-activations", RecomputeKind.Selective)]
    public void PastedMegatronRecomputeGranularityNarrowsTheSpace(string flag, RecomputeKind kind)
    {
        var (input, cl) = Read($"--model caat-1b --gpus 8 --global-batch-size 16 {flag} --recompute-method block");
        if (kind != RecomputeKind.Full)
        {
            Assert.Null(input);
            Assert.Contains("--recompute-method applies only to full recomputation, which the recompute constraint excludes.", cl.Errors);
            (input, cl) = Read($"--model caat-1b --gpus 8 --global-batch-size 16 {flag}");
        }
        Assert.NotNull(input);
        Assert.Empty(cl.Ignored);
        Assert.Equal([kind], input.Space.Constraints.Recompute);
        var options = RecomputeChoices.Options(input.Space.Model, new Layout(8, 1, 1, 1, null, false, 1, 1.0), input.Space.Constraints);
        Assert.NotEmpty(options);
        Assert.All(options, r => Assert.Equal(kind, RecomputeChoices.KindOf(r)));
        if (kind == RecomputeKind.Full) Assert.All(options, r => Assert.Equal(RecomputeMethod.Block, r.Method));
    }

    [Fact]
    public void RecomputeAndRecomputeGranularityTogetherAreRejected()
    {
        var (input, cl) = Read("--model caat-1b --gpus 8 --global-batch-size 16 --recompute none --recompute-granularity full");
        Assert.Null(input);
        Assert.Contains(cl.Errors, e => e.StartsWith("--recompute and --recompute-granularity"));
    }

    [Fact]
    public void AnUnusableOutFolderIsOneSentenceBeforeTheSearch()
    {
        string file = Path.GetTempFileName();
        try
        {
            var (code, _, err) = Run($"--model caat-130m --gpus 8 --global-batch-size 16 --out {file}");
            Assert.Equal(2, code);
            Assert.StartsWith($"harness search: --out '{file}' cannot be used as a folder", err);
            Assert.DoesNotContain("   at ", err);
        }
        finally { File.Delete(file); }
    }

    [Theory]
    [InlineData("70GiB", 70L << 30)]
    [InlineData("80GB", 80_000_000_000L)]
    [InlineData("7.5MiB", 7L * (1 << 20) + (1 << 19))]
    [InlineData("123", 123L)]
    [InlineData("12 kib", 12L << 10)]
    public void MemorySizesParse(string text, long bytes) => Assert.Equal(bytes, SearchArguments.ParseBytes(text));
}
