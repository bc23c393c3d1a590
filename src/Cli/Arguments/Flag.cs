namespace Harness.Cli.Arguments;

/// <summary>One command-line flag: its name as written (<c>--tensor-model-parallel-size</c>), whether a value
/// follows it, and a line of help.</summary>
public sealed record Flag(string Name, bool TakesValue, string Help);
