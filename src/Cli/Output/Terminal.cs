using Spectre.Console;

namespace Harness.Cli.Output;

/// <summary>
/// The Spectre console the commands write their tables to. Spectre's own AnsiConsole.Console binds to the
/// Console.Out of its first use and keeps it, so output after a Console.SetOut (a host capturing the command's output,
/// as the tests do) would still go to the first writer; this one follows Console.Out.
/// </summary>
public static class Terminal
{
    private sealed record Bound(TextWriter Writer, IAnsiConsole Console);

    private static Bound? _current; // one reference: read and replaced whole

    public static IAnsiConsole Out
    {
        get
        {
            var writer = Console.Out;
            if (_current is { } c && ReferenceEquals(c.Writer, writer)) return c.Console;
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer) });
            _current = new Bound(writer, console);
            return console;
        }
    }
}
