using Harness.Executor.Data;
using Harness.Megatron;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness preprocess --input FILE... --output-prefix PREFIX [--json-keys text]`: Megatron's preprocess_data.py —
/// documents (JSON lines, or plain text split at blank lines) to a GPT-2-BPE indexed dataset PREFIX.bin/.idx.
/// </summary>
public static class PreprocessCommand
{
    private static readonly string[] Options = ["--input", "--output-prefix", "--json-keys", "--help"];

    public static int Run(string[] args)
    {
        var inputs = new List<string>();
        string? prefix = null, key = "text";
        for (int i = 0; i < args.Length; i++)
        {
            string? Next() => i + 1 < args.Length ? args[++i] : null;
            switch (args[i])
            {
                case "--input": inputs.Add(Next() ?? ""); break;
                case "--output-prefix": prefix = Next(); break;
                case "--json-keys": key = Next(); break;
                case "--help" or "-h":
                    Console.WriteLine("usage: harness preprocess --input FILE [--input FILE...] --output-prefix PREFIX [--json-keys text]");
                    return 0;
                default:
                    Console.Error.WriteLine(Spelling.Closest(args[i], Options) is string closest
                        ? $"harness preprocess: unknown option '{args[i]}'; did you mean {closest}?"
                        : $"harness preprocess: unknown option '{args[i]}'; valid: {string.Join(", ", Options)}.");
                    return 2;
            }
        }
        if (inputs.Count == 0 || prefix is null || key is null)
        {
            Console.Error.WriteLine("harness preprocess: give --input FILE (one or more) and --output-prefix PREFIX.");
            return 2;
        }
        if (inputs.FirstOrDefault(f => !File.Exists(f)) is string missing)
        {
            Console.Error.WriteLine(Directory.Exists(missing)
                ? $"harness preprocess: --input '{missing}' is a folder; give a file of JSON lines (.jsonl) or plain text."
                : $"harness preprocess: --input '{missing}' does not exist.");
            return 2;
        }
        try
        {
            var result = Preprocessor.Run(inputs, prefix, key);
            Console.WriteLine($"harness preprocess: {result.Documents} documents, {result.Tokens:N0} tokens -> {prefix}.bin/.idx");
            return 0;
        }
        catch (InvalidDataException e)
        {
            Console.Error.WriteLine($"harness preprocess: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"harness preprocess: {e.Message.TrimEnd('.')}; --output-prefix must name a writable path.");
            return 2;
        }
    }
}
