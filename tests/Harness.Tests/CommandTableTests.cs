using Harness.Cli;

namespace Harness.Tests;

/// <summary>`harness` itself: its version, its help and what it says without a command.</summary>
[Collection("Console")]
public class CommandTableTests
{
    private static readonly string[] Commands =
        ["simulate", "reproduce", "validate", "run", "export", "preprocess", "nccl-check", "kernel-check", "calibrate", "search"];

    [Theory]
    [InlineData("--version")]
    [InlineData("-V")]
    public void TheVersionIsTheAssemblysOnOneLine(string flag)
    {
        var (code, output, error) = ConsoleCapture.Run(CommandTable.Dispatch, flag);
        string version = typeof(CommandTable).Assembly.GetName().Version!.ToString(3);
        Assert.Equal(0, code);
        Assert.Matches($@"^harness {System.Text.RegularExpressions.Regex.Escape(version)}(\+[0-9a-f]+)?$", output.Trim());
        Assert.Empty(error);
    }

    [Theory]
    [InlineData("-h", 0)]
    [InlineData("--help", 0)]
    [InlineData("help", 0)]
    public void HelpListsEveryCommandWithItsSummary(string flag, int expected)
    {
        var (code, output, error) = ConsoleCapture.Run(CommandTable.Dispatch, flag);
        Assert.Equal(expected, code);
        Assert.StartsWith("usage: harness <command> [options]", output);
        foreach (var command in Commands) Assert.Matches($@"\n  {command} +\w", output);
        Assert.Empty(error);
    }

    [Fact]
    public void NoCommandPrintsTheUsageAndExitsWithTwo()
    {
        var (code, output, _) = ConsoleCapture.Run(CommandTable.Dispatch);
        Assert.Equal(2, code);
        Assert.StartsWith("usage: harness <command> [options]", output);
    }

    [Theory]
    [InlineData("simulate")]
    [InlineData("search")]
    [InlineData("run")]
    [InlineData("export")]
    [InlineData("validate")]
    [InlineData("reproduce")]
    [InlineData("calibrate")]
    [InlineData("kernel-check")]
    [InlineData("nccl-check")]
    [InlineData("preprocess")]
    public void EachCommandsHelpIsItsUsageAndExitCodeZero(string command)
    {
        var (code, output, error) = ConsoleCapture.Run(CommandTable.Dispatch, command, "--help");
        Assert.Equal(0, code);
        Assert.StartsWith($"usage: harness {command}", output);
        Assert.Empty(error);
    }
}
