using Harness.Cli.Commands;

namespace Harness.Tests;

/// <summary>`harness calibrate`'s user errors, which it reports before it looks for a GPU.</summary>
[Collection("Console")]
public class CalibrateCommandTests
{
    [Theory]
    [InlineData("--seq-length 4096", "--seq-length shapes the --model layer; pass --model too.")]
    [InlineData("--model llama-8b", "--model 'llama-8b' is neither a preset")]
    [InlineData("--model llama-7b --tensor-model-parallel-size 3", "--tensor-model-parallel-size 3 must divide the heads (32), key/value groups (32) and FFN size (11008).")]
    [InlineData("--gpu b200", "--gpu 'b200' is not a preset")]
    [InlineData("--hold-seconds 9999", "--hold-seconds 9999 is out of range; give 0 to 600 seconds.")]
    public void BadOptionsAreOneSentenceAndExitTwo(string args, string sentence)
    {
        var (code, _, err) = ConsoleCapture.Run(CalibrateCommand.Run, args.Split(' '));
        Assert.Equal(2, code);
        Assert.Contains($"harness calibrate: {sentence}", err);
    }
}
