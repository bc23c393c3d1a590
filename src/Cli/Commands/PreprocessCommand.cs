using Harness.Executor.Data;
using Harness.Megatron;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness preprocess`: Megatron's tools/preprocess_data.py with its flags (`--input --output-prefix --json-keys
/// --append-eod --tokenizer-type --tokenizer-model --workers`) — documents (JSON lines, or plain text split at blank lines) to
/// one indexed dataset per JSON key, PREFIX_KEY_document.bin/.idx, tokenized by the tokenizer <see cref="TextTokenizers"/> builds.
/// </summary>
public static class PreprocessCommand
{
    private static readonly string[] Options =
        ["--input", "--output-prefix", "--json-keys", "--append-eod", "--tokenizer-type", "--tokenizer-model", "--workers", "--help"];

    public static int Run(string[] args)
    {
        var inputs = new List<string>();
        var keys = new List<string>();
        var errors = new List<string>();
        string? prefix = null, tokenizer = TextTokenizers.Gpt2Bpe, model = null;
        bool appendEod = false;
        int workers = 1;
        for (int i = 0; i < args.Length; i++)
        {
            string? Next() => i + 1 < args.Length ? args[++i] : null;
            switch (args[i])
            {
                case "--input": inputs.Add(Next() ?? ""); break;
                case "--output-prefix": prefix = Next(); break;
                // nargs='+' in Megatron: every value up to the next flag is a key.
                case "--json-keys":
                    while (i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal)) keys.Add(args[++i]);
                    if (keys.Count == 0) errors.Add("--json-keys needs at least one key.");
                    break;
                case "--append-eod": appendEod = true; break;
                case "--tokenizer-type": tokenizer = Next(); break;
                case "--tokenizer-model": model = Next(); break;
                case "--workers":
                    string? w = Next();
                    if (!int.TryParse(w, out workers) || workers < 1 || workers > 1024)
                        errors.Add($"--workers '{w}' is not a number of workers from 1 to 1024.");
                    break;
                case "--help" or "-h":
                    Console.WriteLine("usage: harness preprocess --input FILE [--input FILE...] --output-prefix PREFIX [--json-keys text...] [--append-eod]");
                    Console.WriteLine($"                          [--tokenizer-type {string.Join('|', TextTokenizers.Types)}]");
                    Console.WriteLine("                          [--tokenizer-model FILE] [--workers N]   -> PREFIX_KEY_document.bin/.idx per key");
                    return 0;
                default:
                    Console.Error.WriteLine(Spelling.Closest(args[i], Options) is string closest
                        ? $"harness preprocess: unknown option '{args[i]}'; did you mean {closest}?"
                        : $"harness preprocess: unknown option '{args[i]}'; valid: {string.Join(", ", Options)}.");
                    return 2;
            }
        }
        if (tokenizer is null) errors.Add("--tokenizer-type needs a value.");
        else if (TextTokenizers.Problem(tokenizer, model) is string problem) errors.Add(problem);
        if (inputs.Count == 0 || prefix is null)
            errors.Add("give --input FILE (one or more) and --output-prefix PREFIX.");
        if (errors.Count > 0)
        {
            Console.Error.WriteLine($"harness preprocess: {errors[0]}");
            return 2;
        }
        if (inputs.FirstOrDefault(f => !File.Exists(f)) is string missing)
        {
            Console.Error.WriteLine(Directory.Exists(missing)
                ? $"harness preprocess: --input '{missing}' is a folder; give a file of JSON lines (.jsonl) or plain text."
                : $"harness preprocess: --input '{missing}' does not exist.");
            return 2;
        }
        if (keys.Count == 0) keys.Add("text");
        try
        {
            foreach (var r in Preprocessor.Run(inputs, prefix!, keys, appendEod, TextTokenizers.Create(tokenizer!, model), workers))
                Console.WriteLine($"harness preprocess: {r.Documents} documents, {r.Tokens:N0} tokens -> {r.Prefix}.bin/.idx");
            return 0;
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException)
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
