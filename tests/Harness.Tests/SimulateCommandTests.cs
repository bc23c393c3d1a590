using Harness.Megatron;
using System.Text.Json;
using Harness.Cli.Arguments;
using Harness.Cli.Commands;

namespace Harness.Tests;

/// <summary>`harness simulate` end to end: exit codes, JSON keys, ignored flags, every validation reason.</summary>
[Collection("Console")]
public class SimulateCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => ConsoleCapture.Run(SimulateCommand.Run, args);

    private const string Table8Theirs =
        "--model llama-175b --gpu h800 --gpus 256 --seq-length 8192 --global-batch-size 256 --tensor-model-parallel-size 4 " +
        "--pipeline-model-parallel-size 8 --num-layers-per-virtual-pipeline-stage 2 --sequence-parallel --kaimm-recompute-norm " +
        "--kaimm-recompute-mlp-activation-func --offload-ratio 0.63 --use-distributed-optimizer --bf16 --json";

    [Fact]
    public void TheIssueCommandPrintsASensibleJsonEstimate()
    {
        var (code, output, _) = Run(Table8Theirs.Split(' '));
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        foreach (var key in new[] { "step_time_s", "tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu", "hfu", "peak_memory_bytes", "fits", "breakdown" })
            Assert.True(root.TryGetProperty(key, out _), key);
        Assert.InRange(root.GetProperty("tokens_per_s_per_gpu").GetDouble(), 387 * 0.85, 387 * 1.15);
        Assert.InRange(root.GetProperty("mfu").GetDouble(), 0.432 * 0.85, 0.432 * 1.15);
        Assert.True(root.GetProperty("fits").GetBoolean());
    }

    [Fact]
    public void KwaiSequenceParallelOverlapKeepsTheForwardReduceScatterExposed()
    {
        double Step(params string[] extra)
        {
            var (code, output, _) = Run([.. Table8Theirs.Split(' '), .. extra]);
            Assert.Equal(0, code);
            return JsonDocument.Parse(output).RootElement.GetProperty("step_time_s").GetDouble();
        }
        double none = Step(), te = Step("--tp-comm-overlap"), kwai = Step("--overlap-sp-ag", "--overlap-sp-rs");
        Assert.True(te < kwai && kwai < none, $"TE {te}, Kwai {kwai}, none {none}");
        Assert.Equal(2, Run([.. Table8Theirs.Split(' '), "--overlap-sp-ag"]).Code);
        Assert.Equal(2, Run([.. Table8Theirs.Split(' '), "--overlap-sp-ag", "--overlap-sp-rs", "--tp-comm-overlap"]).Code);
    }

    [Fact]
    public void NoArgumentsRunsTheDefault()
    {
        var (code, output, _) = Run();
        Assert.Equal(0, code);
        Assert.Contains("llama-7b", output);
        Assert.Contains("h100-sxm", output);
    }

    [Fact]
    public void UnknownMegatronFlagsAreListedAsIgnored()
    {
        var (code, output, _) = Run("--model", "llama-7b", "--gpus", "8", "--lr", "3e-4", "--use-mcore-models", "--train-iters", "10", "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var ignored = doc.RootElement.GetProperty("ignored_flags").EnumerateArray().Select(x => x.GetString()).ToList();
        Assert.Equal(new[] { "--lr 3e-4", "--use-mcore-models", "--train-iters 10" }, ignored);
    }

    [Fact]
    public void AnInvalidConfigurationPrintsEveryReasonAndExitsWithTwo()
    {
        var (code, _, err) = Run("--model", "llama-7b", "--gpus", "8", "--tensor-model-parallel-size", "3",
            "--sequence-parallel", "--offload-ratio", "1.5");
        Assert.Equal(2, code);
        Assert.Contains("world size 8 is not divisible by tensor 3", err);
        Assert.Contains("offload ratio 1.5 is outside [0, 1]", err);
        Assert.DoesNotContain("   at ", err); // no stack trace
    }

    [Fact]
    public void BadValuesAndUnknownPresetsAreUserErrors()
    {
        Assert.Equal(2, Run("--model", "llama-8b").Code);
        Assert.Equal(2, Run("--gpu", "b200").Code);
        Assert.Equal(2, Run("--tensor-model-parallel-size", "two").Code);
        Assert.Equal(2, Run("--num-experts", "8").Code);
        var (_, _, err) = Run("--num-layers", "24");
        Assert.Contains("--num-layers without --model describes a model of its own, which also needs --hidden-size, --num-attention-heads, " +
                        "--seq-length; to change only that of a preset, add --model PRESET (the default is llama-7b).", err);
        Assert.Contains("--gpus 99999999999999 is out of range; it takes an integer up to 2147483647.", Run("--gpus", "99999999999999").Err);
        Assert.Contains("is not divisible by 2 x --context-parallel-size 2147483647",
            Run("--gpus", "2147483647", "--context-parallel-size", "2147483647").Err);
        Assert.Contains("is a folder; give a JSON file.", Run("--cluster", TestTemp.Root).Err);
    }

    /// <summary>
    /// --optimizer sgd keeps SGD's states: with bf16 weights, fp32 master weights and the momentum buffer, 8 B per parameter
    /// instead of Adam's 12 (master, two moments), and 4 B without momentum (torch keeps no buffer); weights and gradients
    /// stay as they are.
    /// </summary>
    [Fact]
    public void SgdShowsItsSmallerOptimizerStates()
    {
        JsonElement Memory(params string[] extra)
        {
            var (code, output, err) = Run(["--model", "llama-7b", "--gpus", "8", "--bf16", "--json", .. extra]);
            Assert.True(code == 0, err);
            return JsonDocument.Parse(output).RootElement.GetProperty("breakdown").GetProperty("memory_bytes").Clone();
        }
        double Bytes(JsonElement m, string part) => m.GetProperty(part).GetDouble();
        var adam = Memory();
        var sgd = Memory("--optimizer", "sgd");
        var plain = Memory("--optimizer", "sgd", "--sgd-momentum", "0");
        Assert.Equal(8.0 / 12, Bytes(sgd, "optimizer") / Bytes(adam, "optimizer"), 6);
        Assert.Equal(4.0 / 12, Bytes(plain, "optimizer") / Bytes(adam, "optimizer"), 6);
        Assert.Equal(Bytes(adam, "weights"), Bytes(sgd, "weights"));
        Assert.Equal(Bytes(adam, "gradients"), Bytes(sgd, "gradients"));
        Assert.True(Bytes(sgd, "total") < Bytes(adam, "total"));
    }

    [Theory]
    [InlineData("--optimizer sgd --sgd-momentum 1", "--sgd-momentum 1 is outside [0, 1).")]
    [InlineData("--optimizer sgd --sgd-momentum -0.5", "--sgd-momentum -0.5 is outside [0, 1).")]
    [InlineData("--sgd-momentum 0.5", "--sgd-momentum applies only with --optimizer sgd.")]
    [InlineData("--optimizer sgd --bf16 --use-precision-aware-optimizer",
        "--use-precision-aware-optimizer needs --optimizer adam: it keeps Adam's states in Transformer Engine's FusedAdam (Megatron asserts the same).")]
    public void ABadOptimizerIsOneSentence(string flags, string sentence)
    {
        var (code, _, err) = Run(["--model", "llama-7b", "--gpus", "8", .. flags.Split(' ')]);
        Assert.Equal(2, code);
        Assert.Equal($"harness simulate: {sentence}\n", err.ReplaceLineEndings("\n"));
    }

    [Theory]
    [InlineData("--gpus", "0", "--gpus is 0; it must be at least 1.")]
    [InlineData("--cuda-device-max-connections", "0",
        "--cuda-device-max-connections 0 is out of range; CUDA accepts 1 to 32 hardware work queues.")]
    [InlineData("--micro-batch-size", "0", "--micro-batch-size is 0; it must be at least 1.")]
    [InlineData("--tensor-model-parallel-size", "0", "--tensor-model-parallel-size is 0; it must be at least 1.")]
    [InlineData("--context-parallel-size", "-1", "--context-parallel-size is -1; it must be at least 1.")]
    public void AZeroSizeIsOneSentenceNotItsEchoes(string flag, string value, string sentence)
    {
        var (code, _, err) = Run("--model", "llama-7b", "--gpus", "8", flag, value);
        Assert.Equal(2, code);
        Assert.Equal($"harness simulate: {sentence}\n", err.ReplaceLineEndings("\n"));
    }

    [Fact]
    public void ModelAndClusterFilesRoundTripThroughTheCommand()
    {
        string dir = Directory.CreateTempSubdirectory("harness-sim-").FullName;
        try
        {
            var (code, model, _) = Run("--model", "llama2-70b", "--print-model-json");
            Assert.Equal(0, code);
            File.WriteAllText(Path.Combine(dir, "m.json"), model);
            var (code2, cluster, _) = Run("--gpu", "h800", "--gpus", "64", "--print-cluster-json");
            Assert.Equal(0, code2);
            File.WriteAllText(Path.Combine(dir, "c.json"), cluster);

            string[] layout = ["--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "4", "--sequence-parallel",
                "--use-distributed-optimizer", "--global-batch-size", "64", "--json"];
            var (a, fromFiles, _) = Run([.. layout, "--model", Path.Combine(dir, "m.json"), "--cluster", Path.Combine(dir, "c.json")]);
            var (b, fromPresets, _) = Run([.. layout, "--model", "llama2-70b", "--gpu", "h800", "--gpus", "64"]);
            Assert.Equal((0, 0), (a, b));
            double Step(string json) => JsonDocument.Parse(json).RootElement.GetProperty("step_time_s").GetDouble();
            Assert.Equal(Step(fromPresets), Step(fromFiles));

            File.WriteAllText(Path.Combine(dir, "bad.json"), model.Replace("\"num_layers\"", "\"layers\""));
            var (bad, _, err) = Run("--model", Path.Combine(dir, "bad.json"));
            Assert.Equal(2, bad);
            Assert.Contains("bad.json", err);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ModelFlagsOverrideAPreset()
    {
        var cl = CommandLine.Parse(["--model", "llama-7b", "--seq-length", "12288", "--num-layers", "8"], SimulationFlags.Flags);
        var model = ModelFlags.Read(cl)!;
        Assert.Equal(12288, model.SeqLength);
        Assert.Equal(8, model.NumLayers);
        Assert.Equal(11008, model.FfnHiddenSize);
    }

    [Fact]
    public void AModelFromFlagsUsesMegatronDefaults()
    {
        var cl = CommandLine.Parse(["--num-layers", "24", "--hidden-size", "2048", "--num-attention-heads", "16",
            "--seq-length", "2048", "--swiglu", "--normalization", "RMSNorm"], SimulationFlags.Flags);
        var model = ModelFlags.Read(cl)!;
        Assert.Equal(5440, model.FfnHiddenSize); // int(4h·2/3/64)·64
        Assert.Equal(16, model.NumQueryGroups);
        Assert.Empty(cl.Errors);
    }

    [Fact]
    public void ParallelFlagsBecomeAConfig()
    {
        var cl = CommandLine.Parse(Table8Theirs.Split(' '), SimulationFlags.Flags.Append(new Flag("--json", false, "")));
        var input = SimulationFlags.Read(cl)!;
        var c = input.Config;
        Assert.Equal((8, 4, 8, 2, 1), (c.DataParallel, c.TensorParallel, c.PipelineParallel, c.LayersPerVirtualStage!.Value, c.ZeroStage));
        Assert.True(c.SequenceParallel && c.RecomputeOrNone.NormOutputs && c.RecomputeOrNone.MlpActivation);
        Assert.Equal(0.63, c.OffloadRatio);
        Assert.Equal(32, c.NumMicroBatches);
    }

    /// <summary>The published tables' systems, as `harness simulate` flags: the CLI must build the very config the
    /// reproduction simulates (Megatron-LM 2019 for Shoeybi's 8.3B row, NVIDIA Megatron-LM of January 2024 for Table 8).</summary>
    [Theory]
    [InlineData("shoeybi-2019-scaling", "8.3B on 512 GPUs",
        "--gpus 512 --tensor-model-parallel-size 8 --micro-batch-size 8 --global-batch-size 512 --fp16 " +
        "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1 --attention-backend unfused " +
        "--no-overlap-p2p-communication --no-async-tensor-model-parallel-allreduce " +
        "--no-masked-softmax-fusion --no-bias-gelu-fusion --no-bias-dropout-fusion --no-gradient-accumulation-fusion")]
    [InlineData("kwai-atc24-table8", "NVIDIA Megatron-LM",
        "--gpus 256 --tensor-model-parallel-size 2 --context-parallel-size 2 --pipeline-model-parallel-size 16 " +
        "--num-layers-per-virtual-pipeline-stage 1 --sequence-parallel --micro-batch-size 1 --global-batch-size 256 --bf16 " +
        "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1 --use-distributed-optimizer " +
        "--use-flash-attn --no-overlap-p2p-communication --no-norm-fusion --cuda-device-max-connections 1 --no-bias-swiglu-fusion")]
    [InlineData("kwai-atc24-table8", "their baseline",
        "--gpus 256 --tensor-model-parallel-size 2 --context-parallel-size 2 --pipeline-model-parallel-size 16 " +
        "--num-layers-per-virtual-pipeline-stage 1 --sequence-parallel --micro-batch-size 1 --global-batch-size 256 --bf16 " +
        "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1 --use-distributed-optimizer " +
        "--use-flash-attn --overlap-sp-ag --overlap-sp-rs " +
        "--cuda-device-max-connections 1 --no-bias-swiglu-fusion")]
    public void MegatronImplementationFlagsBuildTheReproducedConfig(string table, string row, string flags)
    {
        var e = Harness.Reproduce.ExperimentLoader.Resolve(table, ExperimentFileTests.ExperimentsDir).Single();
        var expected = Harness.Reproduce.RowSetup.Resolve(e, e.Rows.Single(r => r.Label == row)).Config;
        var cl = CommandLine.Parse(flags.Split(' '), SimulationFlags.Flags);
        var config = SimulationFlags.Read(cl)!.Config;
        Assert.Empty(cl.Errors);
        // PYTORCH_CUDA_ALLOC_CONF's max_split_size_mb only moves memory, and the command line does not take it.
        Assert.Equal(expected with { MaxSplitSizeMb = null }, config);
    }

    [Fact]
    public void GradientPrecisionFollowsMegatron()
    {
        Harness.Simulator.Specs.RunDescription Read(string flags) =>
            SimulationFlags.Read(CommandLine.Parse(flags.Split(' ', StringSplitOptions.RemoveEmptyEntries), SimulationFlags.Flags))!.Config;
        Assert.True(Read("--gpus 8").GradientsInFp32);                                          // bf16 forces fp32 main gradients
        Assert.False(Read("--gpus 8 --fp16").GradientsInFp32);                                  // fp16 keeps fp16 gradients
        Assert.True(Read("--gpus 8 --fp16 --accumulate-allreduce-grads-in-fp32").GradientsInFp32);
        Assert.True(Read("--gpus 8 --fp32").GradientsInFp32);
    }

    [Theory]
    // Unfused fp32 RMSNorm ops are slower than the fused kernel.
    [InlineData("--no-norm-fusion", "fused_norm", "--model llama-7b --gpus 8")]
    // Megatron-Kwai without its QKV-split overlap: the context-parallel K/V all-gather and reduce-scatter are exposed.
    [InlineData("--no-context-parallel-comm-overlap-gemm", "context_parallel_comm_overlap",
        "--model llama2-70b --seq-length 8192 --gpu h800 --gpus 8 --tensor-model-parallel-size 2 --context-parallel-size 4 --sequence-parallel")]
    public void ImplementationFlagsChangeTheEstimate(string flag, string property, string layout)
    {
        // The JSON says which implementation was simulated, and the flag's is the slower one.
        string[] args = [.. layout.Split(' '), "--json"];
        var (withoutCode, without, _) = Run(args);
        var (withCode, with, _) = Run([.. args, flag]);
        Assert.Equal((0, 0), (withoutCode, withCode));
        using var a = JsonDocument.Parse(without);
        using var b = JsonDocument.Parse(with);
        Assert.True(a.RootElement.GetProperty("config").GetProperty(property).GetBoolean());
        Assert.False(b.RootElement.GetProperty("config").GetProperty(property).GetBoolean());
        Assert.True(b.RootElement.GetProperty("step_time_s").GetDouble() > a.RootElement.GetProperty("step_time_s").GetDouble());
    }

    [Fact]
    public void FusedAttentionOnAGpuWithoutItIsOneSentence()
    {
        var (code, _, err) = Run("--model", "gpt-1.7b", "--gpu", "v100-32gb", "--gpus", "8", "--fp16", "--attention-backend", "fused");
        Assert.Equal(2, code);
        Assert.Contains("--attention-backend fused: the v100-32gb has no cuDNN fused attention (it needs an NVIDIA GPU of compute capability 8.0 or newer); use flash, unfused, local or auto.", err);
    }

    [Fact]
    public void TheReportNamesTheAttentionKernelItCosted()
    {
        var (code, output, _) = Run("--model", "llama-7b", "--gpu", "h100-sxm", "--gpus", "8", "--bf16", "--attention-backend", "auto");
        Assert.Equal(0, code);
        Assert.Contains("attention auto: fused (cuDNN)", output);
    }

    [Fact]
    public void SomeButNotAllElementwiseFusionFlagsAreAUserError()
    {
        var (code, _, err) = Run("--model", "gpt2-large", "--gpus", "8", "--no-bias-gelu-fusion");
        Assert.Equal(2, code);
        Assert.Contains("pass all three or none", err);
    }
}
