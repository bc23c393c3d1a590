namespace Harness.Megatron;

/// <summary>One command-line flag: its name as written (<c>--tensor-model-parallel-size</c>), whether a value
/// follows it, a line of help, and whether its value runs on to the next flag (argparse's nargs='+': the words joined
/// by spaces).</summary>
public sealed record Flag(string Name, bool TakesValue, string Help, bool TakesList = false)
{
    /// <summary>A command's --help list: one line per flag, name (with " X" when it takes a value) padded to <paramref name="width"/>.</summary>
    public static void PrintHelp(IEnumerable<Flag> flags, int width)
    {
        foreach (var f in flags) Console.WriteLine("  " + (f.Name + (f.TakesValue ? " X" : "")).PadRight(width) + " " + f.Help);
    }
}
