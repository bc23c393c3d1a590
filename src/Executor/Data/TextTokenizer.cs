namespace Harness.Executor.Data;

/// <summary>
/// A tokenizer as Megatron's preprocessing and training use it (megatron/core/tokenizers/text/text_tokenizer.py,
/// NVIDIA/Megatron-LM d98e8a6): text to ids (tokenize), ids to text (detokenize), the vocabulary size the model's tables
/// are padded from, and the end-of-document id --append-eod adds (eod; null when the tokenizer names none).
/// </summary>
public interface ITextTokenizer
{
    int VocabSize { get; }
    int? EndOfDocument { get; }
    IReadOnlyList<int> Encode(string text);
    string Decode(IEnumerable<int> ids);
}

/// <summary>
/// Megatron's --tokenizer-type names that Harness has, and the tokenizer each builds from --tokenizer-model
/// (megatron/core/tokenizers/utils/build_tokenizer.py at d98e8a6): GPT2BPETokenizer (GPT-2's BPE, built in); HuggingFaceTokenizer
/// (a tokenizer.json, <see cref="HuggingFaceTokenizer"/>); GPTSentencePieceTokenizer and Llama2Tokenizer, which at d98e8a6 are
/// one SentencePiece tokenizer (<see cref="SentencePieceModelTokenizer"/>).
/// </summary>
public static class TextTokenizers
{
    public const string Gpt2Bpe = "GPT2BPETokenizer";
    public const string HuggingFace = "HuggingFaceTokenizer";
    public const string GptSentencePiece = "GPTSentencePieceTokenizer";
    public const string Llama2 = "Llama2Tokenizer";

    public static readonly string[] Types = [Gpt2Bpe, HuggingFace, GptSentencePiece, Llama2];

    /// <summary>Why --tokenizer-type <paramref name="type"/> with --tokenizer-model <paramref name="model"/> builds no tokenizer (one
    /// sentence), or null when it does (the model file is read by <see cref="Create"/>).</summary>
    public static string? Problem(string type, string? model) =>
        !Types.Contains(type) ? $"--tokenizer-type '{type}' is not one Harness has; valid: {string.Join(", ", Types)}."
        : type == Gpt2Bpe ? (model is null ? null : $"--tokenizer-model is for the tokenizers read from a file; {Gpt2Bpe}'s vocabulary is built in.")
        : model is null ? $"--tokenizer-type {type} needs --tokenizer-model ({(type == HuggingFace ? "a tokenizer.json, or the folder holding it" : "a SentencePiece tokenizer.model")})."
        : !File.Exists(model) && !(type == HuggingFace && File.Exists(Path.Combine(model, HuggingFaceTokenizer.FileName)))
            ? $"--tokenizer-model '{model}' does not exist{(type == HuggingFace && Directory.Exists(model) ? $" as a file and holds no {HuggingFaceTokenizer.FileName}" : "")}."
        : null;

    /// <summary>The tokenizer; throws InvalidDataException naming what is wrong with the model file.</summary>
    public static ITextTokenizer Create(string type, string? model) => type switch
    {
        Gpt2Bpe => new Gpt2Tokenizer(),
        HuggingFace => HuggingFaceTokenizer.Load(model!),
        _ => SentencePieceModelTokenizer.Load(model!),
    };
}
