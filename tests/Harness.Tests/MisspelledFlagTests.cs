using Harness.Cli;

namespace Harness.Tests;

/// <summary>Every command refuses a misspelled flag with exit 2 and names the flag it most likely meant; a Megatron flag
/// that would change what the command computes, and that Harness does not model, is refused naming itself.</summary>
[Collection("Console")]
public class MisspelledFlagTests
{
    [Theory]
    [InlineData("simulate", "--tensor-model-paralel-size", "--tensor-model-parallel-size")]
    [InlineData("search", "--pipeline-model-paralel-size", "--pipeline-model-parallel-size")]
    [InlineData("run", "--micro-batch-sise", "--micro-batch-size")]
    [InlineData("validate", "--jsno", "--json")]
    [InlineData("reproduce", "--no-file", "--no-files")]
    [InlineData("calibrate", "--hold-second", "--hold-seconds")]
    [InlineData("kernel-check", "--libtorh", "--libtorch")]
    [InlineData("nccl-check", "--nproc-per-nod", "--nproc-per-node")]
    [InlineData("preprocess", "--ouput-prefix", "--output-prefix")]
    public void AMisspelledFlagNamesTheClosest(string command, string typo, string meant)
    {
        var (code, _, err) = ConsoleCapture.Run(CommandTable.Dispatch, command, typo, "1");
        Assert.Equal(2, code);
        Assert.Contains($"did you mean {meant}?", err);
    }

    [Theory]
    [InlineData("simulate", "--moe-router-topk", "2")]
    [InlineData("search", "--num-experts", "8")]
    [InlineData("run", "--fp8-format", "hybrid")]
    public void AnUnmodelledMegatronFlagIsRefusedByName(string command, string flag, string value)
    {
        var (code, _, err) = ConsoleCapture.Run(CommandTable.Dispatch, command, "--model", "llama-7b", "--global-batch-size", "8", flag, value);
        Assert.Equal(2, code);
        Assert.Contains($"{flag} is a Megatron-LM flag that changes", err);
    }
}
