using Harness.Executor.Data;
using Harness.Megatron;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness preprocess`: Megatron's tools/preprocess_data.py with its flags (`--input --output-prefix --json-keys
/// --append-eod --tokenizer-type --workers`) — documents (JSON lines, or plain text split at blank lines) to one indexed
/// dataset per JSON key, PREFIX_KEY_document.bin/.idx, tokenized with GPT-2 BPE (its vocabulary is built in).
/// </summary>
public static class PreprocessCommand
{
    private static readonly string[] Options =
        ["--input", "--output-prefix", "--json-keys", "--append-eod", "--tokenizer-type", "--workers", "--help"];

    /// <summary>The tokenizers Megatron's --tokenizer-type names that this preprocess has.</summary>
    private const string Gpt2Bpe = "GPT2BPETokenizer";

    public static int Run(string[] args)
    {
        var inputs = new List<string>();
        var keys = new List<string>();
        var errors = new List<string>();
        string? prefix = null, tokenizer = Gpt2Bpe;
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
                case "--workers":
                    string? w = Next();
                    if (!int.TryParse(w, out workers) || workers < 1 || workers > 1024)
                        errors.Add($"--workers '{w}' is not a number of workers from 1 to 1024.");
                    break;
                case "--help" or "-h":
                    Console.WriteLine("usage: harness preprocess --input FILE [--input FILE...] --output-prefix PREFIX [--json-keys text...] [--append-eod]");
                    Console.WriteLine("                          [--tokenizer-type GPT2BPETokenizer] [--workers N]   -> PREFIX_KEY_document.bin/.idx per key");
                    return 0;
                default:
                    Console.Error.WriteLine(Spelling.Closest(args[i], Options) is string closest
                        ? $"harness preprocess: unknown option '{args[i]}'; did you mean {closest}?"
                        : $"harness preprocess: unknown option '{args[i]}'; valid: {string.Join(", ", Options)}.");
                    return 2;
            }
        }
        if (tokenizer != Gpt2Bpe)
            errors.Add($"--tokenizer-type '{tokenizer}' is not one this preprocess has; valid: {Gpt2Bpe} (GPT-2's byte-level BPE, its vocabulary built in).");
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
            foreach (var r in Preprocessor.Run(inputs, prefix!, keys, appendEod, workers))
                Console.WriteLine($"harness preprocess: {r.Documents} documents, {r.Tokens:N0} tokens -> {r.Prefix}.bin/.idx");
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
