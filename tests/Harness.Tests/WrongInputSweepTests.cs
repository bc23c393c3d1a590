using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Harness.Cli;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>The files the wrong inputs name: malformed model and cluster files, a folder, a regular file, bad text.</summary>
public sealed class WrongInputFiles : IDisposable
{
    public static readonly string Folder = Path.Combine(TestTemp.Root, $"harness-wrong-inputs-{Environment.ProcessId}");

    public WrongInputFiles()
    {
        Directory.CreateDirectory(Path.Combine(Folder, "folder"));
        Directory.CreateDirectory(Path.Combine(Folder, "damaged-run"));
        string model = SpecJson.Write(ModelPresets.All["llama-7b"]);
        string cluster = SpecJson.Write(ClusterSpec.Of(GpuPresets.All["h100-sxm"], 8));
        var files = new Dictionary<string, string>
        {
            ["bad.json"] = "{ not json",
            ["empty.json"] = "",
            ["array.json"] = "[]",
            ["object.json"] = "{}",
            ["model.json"] = model,
            ["relu2.json"] = model.Replace("\"swi_glu\"", "\"relu2\""),
            ["negative-layers.json"] = model.Replace("\"num_layers\": 32", "\"num_layers\": -4"),
            ["huge-layers.json"] = model.Replace("\"num_layers\": 32", "\"num_layers\": 99999999999999"),
            ["text-hidden.json"] = model.Replace("\"hidden_size\": 4096", "\"hidden_size\": \"big\""),
            ["cluster.json"] = cluster,
            ["cluster-zero.json"] = cluster.Replace("\"world_size\": 8", "\"world_size\": 0"),
            ["cluster-negative-memory.json"] = Regex.Replace(cluster, "\"memory_bytes\": \\d+", "\"memory_bytes\": -1"),
            ["cluster-efficiency.json"] = Regex.Replace(cluster, "\"gemm\": [0-9.]+", "\"gemm\": 7"),
            ["cluster-null-gpu.json"] = "{\"gpu\": null, \"world_size\": 8, \"gpus_per_node\": 8}",
            ["file.txt"] = "hello\n",
            ["empty.txt"] = "",
            ["ok.txt"] = "hello world\n",
            ["ok.jsonl"] = "{\"text\": \"hello world\"}\n",
            ["damaged-run/summary.json"] = "{bad",
        };
        foreach (var (name, text) in files) File.WriteAllText(Path.Combine(Folder, name), text);
        File.WriteAllBytes(Path.Combine(Folder, "invalid-utf8.txt"), [(byte)'a', 0xC3, 0x28, (byte)'\n']);
    }

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}

/// <summary>
/// Wrong inputs over every command of `harness`, run in process through <see cref="CommandTable.Dispatch"/>: each exits with
/// code 2 and prints exactly one sentence on standard error, naming the offending value, with nothing on standard output, no
/// stack trace and no native frames. A few run as real processes, for the exit code the shell sees.
/// </summary>
[Collection("Console")]
public sealed class WrongInputSweepTests : IClassFixture<WrongInputFiles>
{
    /// <summary>"value | command line": the value the sentence must name; {d} is <see cref="WrongInputFiles.Folder"/>,
    /// {run} a GPU run's folder under results/.</summary>
    private const string Table = """
        2147483647 | simulate --gpus 2147483647 --context-parallel-size 2147483647
        99999999999999 | simulate --gpus 99999999999999
        -8 | simulate --gpus -8
        0 | simulate --gpus 0
        abc | simulate --gpus abc
        1.5 | simulate --gpus 1.5
        0 | simulate --gpus-per-node 0
        0 | simulate --tensor-model-parallel-size 0
        -2 | simulate --tensor-model-parallel-size -2
        2147483647 | simulate --tensor-model-parallel-size 2147483647
        2147483647 | simulate --pipeline-model-parallel-size 2147483647
        0 | simulate --pipeline-model-parallel-size 0
        0 | simulate --context-parallel-size 0
        0 | simulate --micro-batch-size 0
        -1 | simulate --micro-batch-size -1
        2147483647 | simulate --micro-batch-size 2147483647
        0 | simulate --global-batch-size 0
        2147483647 | simulate --global-batch-size 2147483647
        99999999999999 | simulate --global-batch-size 99999999999999
        0 | simulate --num-layers-per-virtual-pipeline-stage 0
        -1 | simulate --offload-ratio -1
        1.5 | simulate --offload-ratio 1.5
        NaN | simulate --offload-ratio NaN
        Infinity | simulate --offload-ratio Infinity
        -0.5 | simulate --sync-factor -0.5
        2 | simulate --sync-factor 2
        4 | simulate --zero-stage 4
        -1 | simulate --zero-stage -1
        bogus | simulate --recompute-granularity bogus
        bogus | simulate --recompute-granularity full --recompute-method bogus
        0 | simulate --recompute-granularity full --recompute-num-layers 0
        --recompute-method | simulate --recompute-method block
        bogus | simulate --attention-backend bogus
        bogus | simulate --cp-comm-type bogus
        3 | simulate --hierarchical-context-parallel-sizes 3
        adagrad | simulate --optimizer adagrad
        1 | simulate --optimizer sgd --sgd-momentum 1
        local | simulate --transformer-impl local
        0 | simulate --cuda-device-max-connections 0
        64 | simulate --cuda-device-max-connections 64
        -5 | simulate --ddp-bucket-size -5
        0 | simulate --max-split-size-mb 0
        -1 | simulate --cpu-offloading-num-layers -1
        bogus | simulate --main-grads-dtype bogus
        bogus | simulate --exp-avg-dtype bogus
        bogus | simulate --attention-flops bogus
        --fp16 | simulate --bf16 --fp16
        --zero-stage | simulate --use-distributed-optimizer --zero-stage 0
        --overlap-sp-rs | simulate --overlap-sp-ag
        --bogus-flag | simulate --bogus-flag
        --tensor-model-paralel-size | simulate --tensor-model-paralel-size 2
        --num-experts | simulate --num-experts 8
        stray | simulate stray
        --gpus | simulate --gpus
        --json | simulate --json=1
        --model | simulate --model
        nonesuch | simulate --model nonesuch
        {d}/folder | simulate --model {d}/folder
        {d}/missing.json | simulate --model {d}/missing.json
        bad.json | simulate --model {d}/bad.json
        empty.json | simulate --model {d}/empty.json
        array.json | simulate --model {d}/array.json
        activation | simulate --model {d}/relu2.json
        -4 | simulate --model {d}/negative-layers.json
        num_layers | simulate --model {d}/huge-layers.json
        hidden_size | simulate --model {d}/text-hidden.json
        num_layers | simulate --model {d}/object.json
        --seq-length | simulate --seq-length 8192
        --tokenizer-model | simulate --num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 128 --tokenizer-model gpt2
        0 | simulate --model llama-7b --num-layers 0
        -1 | simulate --model llama-7b --hidden-size -1
        0 | simulate --model llama-7b --num-attention-heads 0
        7 | simulate --model llama-7b --num-attention-heads 7
        0 | simulate --model llama-7b --seq-length 0
        0 | simulate --model llama-7b --vocab-size 0
        0 | simulate --model llama-7b --ffn-hidden-size 0
        bogus | simulate --model llama-7b --normalization bogus
        bogus | simulate --model llama-7b --position-embedding-type bogus
        1.5 | simulate --model llama-7b --hidden-dropout 1.5
        -0.1 | simulate --model llama-7b --attention-dropout -0.1
        0 | simulate --model llama-7b --norm-epsilon 0
        -1 | simulate --model llama-7b --rotary-base -1
        5 | simulate --model llama-7b --group-query-attention --num-query-groups 5
        0 | simulate --model llama-7b --group-query-attention --num-query-groups 0
        --group-query-attention | simulate --model llama-7b --num-query-groups 8
        100 | simulate --model llama-7b --kv-channels 100
        512 | simulate --model gpt2-large --max-position-embeddings 512
        --disable-bias-linear | simulate --model gpt2-large --disable-bias-linear
        --no-position-embedding | simulate --model gpt2-large --no-position-embedding
        nonesuch | simulate --gpu nonesuch
        {d}/missing.json | simulate --cluster {d}/missing.json
        {d}/folder | simulate --cluster {d}/folder
        bad.json | simulate --cluster {d}/bad.json
        world_size | simulate --cluster {d}/cluster-zero.json
        -1 | simulate --cluster {d}/cluster-negative-memory.json
        7 | simulate --cluster {d}/cluster-efficiency.json
        gpu | simulate --cluster {d}/cluster-null-gpu.json
        name | simulate --cluster {d}/model.json
        --cluster | simulate --gpu h100-sxm --cluster {d}/cluster.json
        99999999999999 | search --model llama-7b --gpus 99999999999999 --global-batch-size 128
        0 | search --model llama-7b --gpus 0 --global-batch-size 128
        0 | search --model llama-7b --gpus 8 --global-batch-size 0
        -128 | search --model llama-7b --gpus 8 --global-batch-size -128
        --global-batch-size | search --model llama-7b --gpus 8
        0 | search --model llama-7b --gpus 8 --global-batch-size 128 --top 0
        -3 | search --model llama-7b --gpus 8 --global-batch-size 128 --top -3
        0 | search --model llama-7b --gpus 8 --global-batch-size 128 --threads 0
        1.5 | search --model llama-7b --gpus 8 --global-batch-size 128 --pareto-min-throughput 1.5
        0 | search --model llama-7b --gpus 8 --global-batch-size 128 --tensor-model-parallel-size 0
        x | search --model llama-7b --gpus 8 --global-batch-size 128 --tensor-model-parallel-size 2,x
        2147483647 | search --model llama-7b --gpus 8 --global-batch-size 128 --tensor-model-parallel-size 2147483647
        3 | search --model llama-7b --gpus 8 --global-batch-size 128 --pipeline-model-parallel-size 3
        0 | search --model llama-7b --gpus 8 --global-batch-size 128 --offload-step 0
        -0.1 | search --model llama-7b --gpus 8 --global-batch-size 128 --offload-step -0.1
        1.5 | search --model llama-7b --gpus 8 --global-batch-size 128 --offload-ratio 1.5
        bogus | search --model llama-7b --gpus 8 --global-batch-size 128 --recompute bogus
        bogus | search --model llama-7b --gpus 8 --global-batch-size 128 --recompute-granularity bogus
        5 | search --model llama-7b --gpus 8 --global-batch-size 128 --zero-stage 5
        -1 | search --model llama-7b --gpus 8 --global-batch-size 128 --sync-factor -1
        bogus | search --model llama-7b --gpus 8 --global-batch-size 128 --memory-limit bogus
        -5GiB | search --model llama-7b --gpus 8 --global-batch-size 128 --memory-limit -5GiB
        0 | search --model llama-7b --gpus 8 --global-batch-size 128 --memory-limit 0
        bogus | search --model llama-7b --gpus 8 --global-batch-size 128 --cp-comm-type bogus
        {d}/file.txt | search --model llama-7b --gpus 8 --global-batch-size 128 --out {d}/file.txt
        /proc/x | search --model llama-7b --gpus 8 --global-batch-size 128 --out /proc/x
        --bogus | search --model llama-7b --gpus 8 --global-batch-size 128 --bogus
        --seq-length | search --seq-length 8192 --gpus 8 --global-batch-size 128
        {d}/folder | search --model llama-7b --cluster {d}/folder --global-batch-size 128
        activation | search --model {d}/relu2.json --gpus 8 --global-batch-size 128
        nonesuch | search --model llama-7b --gpu nonesuch --global-batch-size 128
        --no-sequence-parallel | search --model llama-7b --gpus 8 --global-batch-size 128 --sequence-parallel --no-sequence-parallel
        --offload-ratio | search --model llama-7b --gpus 8 --global-batch-size 128 --no-offload --offload-ratio 0.5
        --hierarchical-context-parallel-sizes | search --model llama-7b --gpus 8 --global-batch-size 128 --hierarchical-context-parallel-sizes 2 2
        --zero-stage | search --model llama-7b --gpus 8 --global-batch-size 128 --use-distributed-optimizer --zero-stage 2
        --recompute-method | search --model llama-7b --gpus 8 --global-batch-size 128 --recompute selective --recompute-method block
        /nonexistent | reproduce all --experiments /nonexistent
        {d}/file.txt | reproduce all --experiments {d}/file.txt
        {d}/folder | reproduce all --experiments {d}/folder
        {d}/folder | reproduce kwai-atc24-table8 --experiments {d}/folder
        nonesuch | reproduce nonesuch
        bad.json | reproduce {d}/bad.json
        model.json | reproduce {d}/model.json
        --bogus | reproduce all --bogus
        --jsn | reproduce all --jsn
        /proc/x | reproduce kwai-atc24-table8 --out /proc/x
        extra | reproduce kwai-atc24-table8 extra
        --experiments | reproduce all --experiments
        NAME | reproduce
        /nonexistent | validate /nonexistent
        {d}/file.txt | validate {d}/file.txt
        {d}/folder | validate {d}/folder
        {d}/damaged-run | validate {d}/damaged-run
        nonesuch | validate {run} --gpu nonesuch
        {d}/folder | validate {run} --cluster {d}/folder
        bad.json | validate {run} --cluster {d}/bad.json
        /proc/x.csv | validate {run} --csv /proc/x.csv
        {d}/folder | validate {run} --csv {d}/folder
        --bogus | validate {run} --bogus
        --lr | validate {run} --lr 3
        --cluster | validate {run} --gpu h100-sxm --cluster {d}/cluster.json
        run folder | validate
        {d}/missing.txt | preprocess --input {d}/missing.txt --output-prefix {d}/pp
        {d}/folder | preprocess --input {d}/folder --output-prefix {d}/pp
        empty.txt | preprocess --input {d}/empty.txt --output-prefix {d}/pp
        invalid-utf8.txt | preprocess --input {d}/invalid-utf8.txt --output-prefix {d}/pp
        /proc/x | preprocess --input {d}/ok.txt --output-prefix /proc/x/pp
        {d}/file.txt | preprocess --input {d}/ok.txt --output-prefix {d}/file.txt/pp
        bogus | preprocess --input {d}/ok.jsonl --output-prefix {d}/pp --json-keys bogus
        --bogus | preprocess --input {d}/ok.txt --output-prefix {d}/pp --bogus
        --output-prefix | preprocess --input {d}/ok.txt
        --input | preprocess --input
        -1 | calibrate --hold-seconds -1
        abc | calibrate --hold-seconds abc
        601 | calibrate --hold-seconds 601
        nonesuch | calibrate --gpu nonesuch
        nonesuch | calibrate --model nonesuch
        0 | calibrate --model llama-7b --seq-length 0
        -1 | calibrate --model llama-7b --micro-batch-size -1
        3 | calibrate --model llama-7b --tensor-model-parallel-size 3
        0 | calibrate --model llama-7b --tensor-model-parallel-size 0
        --seq-length | calibrate --seq-length 8192
        activation | calibrate --model {d}/relu2.json
        /proc/x/c.json | calibrate --out /proc/x/c.json
        {d}/folder | calibrate --out {d}/folder
        /nonexistent | calibrate --libtorch /nonexistent
        --bogus | calibrate --bogus
        --lr | calibrate --lr 1
        /nonexistent | kernel-check --libtorch /nonexistent
        --bogus | kernel-check --bogus
        --timing | kernel-check --timing
        --no-timing | kernel-check --no-timing=1
        0 | nccl-check --nproc-per-node 0
        abc | nccl-check --nproc-per-node abc
        2147483647 | nccl-check --nproc-per-node 2147483647
        -1 | nccl-check --bandwidth-mib -1
        /nonexistent | nccl-check --libtorch /nonexistent
        --bogus | nccl-check --bogus
        bogus | bogus
        simulat | simulat
        --bogus | --bogus
        {d}/folder | export --load {d}/folder --out {d}/exported
        --out | export --load {d}/folder
        --load | export --out {d}/exported
        /proc/x | export --load {d}/folder --out /proc/x
        --bogus | export --bogus
        bogus | run --load {d}/folder --load-format bogus
        {d}/folder | run --load {d}/folder --load-format hf
        {d}/file.txt | run --load {d}/file.txt --load-format hf
        -1 | run --lr -1
        -1 | run --min-lr -1
        0.01 | run --lr 0.001 --min-lr 0.01
        1 | run --adam-beta1 1
        -0.1 | run --adam-beta1 -0.1
        1.5 | run --adam-beta2 1.5
        0 | run --adam-eps 0
        -1e-8 | run --adam-eps -1e-8
        -1 | run --clip-grad -1
        -0.01 | run --weight-decay -0.01
        200 | run --train-iters 100 --lr-warmup-iters 200
        -5 | run --lr-warmup-iters -5
        1.5 | run --lr-warmup-fraction 1.5
        -0.5 | run --lr-warmup-fraction -0.5
        --lr-warmup-iters | run --lr-warmup-fraction 0.1 --lr-warmup-iters 5
        -1 | run --lr-decay-iters -1
        bogus | run --lr-decay-style bogus
        WSD | run --lr-decay-style WSD
        0 | run --train-iters 0
        -3 | run --train-iters -3
        99999999999999 | run --train-iters 99999999999999
        0 | run --log-interval 0
        -1 | run --save-interval -1
        0 | run --eval-interval 0
        -1 | run --eval-iters -1
        abc | run --split abc
        0 | run --loss-scale 0
        -1 | run --loss-scale -1
        0 | run --initial-loss-scale 0
        0 | run --min-loss-scale 0
        0 | run --loss-scale-window 0
        -1 | run --hysteresis -1
        0 | run --exit-interval 0
        -1 | run --exit-duration-in-mins -1
        0 | run --nproc-per-node 0
        -2 | run --nproc-per-node -2
        2147483647 | run --nproc-per-node 2147483647
        bogus | run --device bogus
        nonesuch | run --gpu nonesuch
        70000 | run --master-port 70000
        0 | run --master-port 0
        /nonexistent/data | run --data-path /nonexistent/data
        {d}/folder | run --data-path {d}/folder
        --mock-data | run --data-path {d}/folder --mock-data
        /proc/x | run --save /proc/x
        /proc/x | run --out /proc/x
        {d}/file.txt | run --out {d}/file.txt/sub
        {d}/file.txt | run --save {d}/file.txt
        /nonexistent | run --load /nonexistent
        {d}/file.txt | run --load {d}/file.txt
        {d}/folder | run --load {d}/folder
        /nonexistent | run --libtorch /nonexistent
        --gpus | run --gpus 8
        --json | run --json
        --bogus | run --bogus
        --num-experts | run --num-experts 8
        --init-method-std | run --init-method-std 0.02
        --seq-length | run --seq-length 8192
        --hidden-dropout | run --hidden-dropout 0.2
        1.5 | run --model tiny-gpt2 --hidden-dropout 1.5
        nonesuch | run --model nonesuch
        bad.json | run --model {d}/bad.json
        activation | run --model {d}/relu2.json
        0 | run --tensor-model-parallel-size 0
        3 | run --tensor-model-parallel-size 3
        0 | run --make-vocab-size-divisible-by 0
        0 | run --micro-batch-size 0
        3 | run --nproc-per-node 2 --global-batch-size 3
        abc | run --seed abc
        --profile | run --profile-step-start 3
        --device | run --profile
        --ranks-on-one-device | run --ranks-on-one-device
        --deterministic-mode | run --deterministic-mode --attention-backend fused
        """;

    /// <summary>Search spaces with no valid configuration: one sentence naming the value, then the closest configurations'
    /// reasons, indented.</summary>
    private const string EmptySpaces = """
        2147483647 | search --model llama-7b --gpus 2147483647 --global-batch-size 128
        2147483647 | search --model llama-7b --gpus 2147483647 --context-parallel-size 2147483647 --global-batch-size 128
        7 | search --model llama-7b --gpus 7 --global-batch-size 128
        """;

    public static TheoryData<string, string> Cases() => Parse(Table);

    public static TheoryData<string, string> EmptySpaceCases() => Parse(EmptySpaces);

    private static TheoryData<string, string> Parse(string table)
    {
        var data = new TheoryData<string, string>();
        foreach (var line in table.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int bar = line.IndexOf(" | ", StringComparison.Ordinal);
            data.Add(line[..bar], line[(bar + 3)..]);
        }
        return data;
    }

    private static string Expand(string text) => text
        .Replace("{d}", WrongInputFiles.Folder)
        .Replace("{run}", Path.Combine(ExperimentFileTests.ExperimentsDir, "..", "results", "executor", "nvidia-h200", "gpt2-large"));

    /// <summary>Exactly one sentence, from the command named, naming <paramref name="value"/>; no trace of the machinery.</summary>
    private static void AssertOneSentence(string command, string value, int code, string output, string error)
    {
        string e = error.Trim();
        Assert.True(code == 2, $"exit code {code}; stderr: {e}");
        Assert.True(output.Length == 0, $"standard output holds: {output}");
        Assert.True(!e.Contains('\n'), $"more than one line: {e}");
        Assert.StartsWith(Commands.Contains(command) ? $"harness {command}: " : "harness: ", e);
        Assert.True(Regex.IsMatch(e, @"[.?]$") && !Regex.IsMatch(e, @"[.?!] [A-Z]"), $"not one sentence: {e}");
        Assert.True(e.Contains(Expand(value), StringComparison.Ordinal), $"'{value}' is not named: {e}");
        foreach (var trace in new[] { "   at ", "Exception", "terminate called", "c10::Error" })
            Assert.True(!e.Contains(trace, StringComparison.Ordinal), $"'{trace}' in: {e}");
    }

    private static readonly string[] Commands =
        ["simulate", "search", "reproduce", "validate", "run", "export", "preprocess", "calibrate", "kernel-check", "nccl-check"];

    [Theory]
    [MemberData(nameof(Cases))]
    public void IsOneSentenceNamingTheValueAndExitCodeTwo(string value, string line)
    {
        var args = Expand(line).Split(' ');
        var (code, output, error) = ConsoleCapture.Run(CommandTable.Dispatch, args);
        AssertOneSentence(args[0], value, code, output, error);
    }

    [Theory]
    [MemberData(nameof(EmptySpaceCases))]
    public void AnEmptySearchSpaceIsOneSentenceAndItsClosestConfigurations(string value, string line)
    {
        var (code, output, error) = ConsoleCapture.Run(CommandTable.Dispatch, line.Split(' '));
        var lines = error.TrimEnd().Split('\n');
        AssertOneSentence("search", value, code, output, lines[0]);
        Assert.True(lines.Length > 1, "no configuration is shown");
        foreach (var reason in lines.Skip(1)) Assert.StartsWith("  ", reason);
        foreach (var trace in new[] { "   at ", "Exception" }) Assert.DoesNotContain(trace, error);
    }

    [Fact]
    public void TheSweepCoversEveryCommand()
    {
        var covered = Cases().Select(c => ((string)c[1]).Split(' ')[0]).ToHashSet();
        foreach (var command in Commands) Assert.Contains(command, covered);
        Assert.True(Cases().Count() >= 150, $"{Cases().Count()} cases");
    }

    /// <summary>As the shell sees them: the process's own exit code and standard error, from the built `harness`.</summary>
    [Theory]
    [InlineData("0", "simulate --gpus 0")]
    [InlineData("99999999999999", "search --model llama-7b --gpus 99999999999999 --global-batch-size 128")]
    [InlineData("-1", "run --lr -1")]
    [InlineData("bogus", "bogus")]
    public async Task AsAProcessItIsOneSentenceAndExitCodeTwo(string value, string line)
    {
        var psi = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "harness"))
        {
            RedirectStandardOutput = true, RedirectStandardError = true, StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var a in line.Split(' ')) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await process.WaitForExitAsync(limit.Token);
        AssertOneSentence(line.Split(' ')[0], value, process.ExitCode, await output, await error);
    }
}
