namespace Harness.Tests;

/// <summary>Tests that swap the process-wide Console.Out/Error run one at a time.</summary>
[CollectionDefinition("Console", DisableParallelization = true)]
public class ConsoleCollection;

/// <summary>Runs a `harness` subcommand with its standard output and error captured (tests in the "Console" collection).</summary>
public static class ConsoleCapture
{
    public static (int Code, string Out, string Err) Run(Func<string[], int> command, params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o);
        Console.SetError(e);
        try { return (command(args), o.ToString(), e.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
    }
}
