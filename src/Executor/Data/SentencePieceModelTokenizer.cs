using Microsoft.ML.Tokenizers;

namespace Harness.Executor.Data;

/// <summary>
/// Megatron's SentencePiece tokenizer, which --tokenizer-type GPTSentencePieceTokenizer and Llama2Tokenizer both build at
/// NVIDIA/Megatron-LM d98e8a6 (megatron/core/tokenizers/utils/build_tokenizer.py SP_TOKENIZERS;
/// megatron/core/tokenizers/text/libraries/sentencepiece_tokenizer.py): text_to_ids is the model's encode_as_ids (no BOS
/// or EOS added), eod the model's eos_id, vocab_size its piece count. (Megatron's legacy Llama2Tokenizer, removed before
/// d98e8a6, put BOS before every document; the current one does not.) The tokenizer.model (a SentencePiece ModelProto,
/// BPE or unigram, as Llama's) is read by Microsoft.ML.Tokenizers' SentencePieceTokenizer.
/// </summary>
public sealed class SentencePieceModelTokenizer : ITextTokenizer
{
    private readonly SentencePieceTokenizer model;

    private SentencePieceModelTokenizer(SentencePieceTokenizer model) => this.model = model;

    public int VocabSize => model.Vocabulary.Count;

    public int? EndOfDocument => model.EndOfSentenceId >= 0 ? model.EndOfSentenceId : null;

    /// <summary>Reads <paramref name="path"/>; throws InvalidDataException when it is not a SentencePiece model.</summary>
    public static SentencePieceModelTokenizer Load(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return new SentencePieceModelTokenizer(SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false));
        }
        catch (Exception e) when (e is not FileNotFoundException and not DirectoryNotFoundException and not UnauthorizedAccessException)
        {
            throw new InvalidDataException($"{path} is not a SentencePiece model Harness reads ({e.Message.TrimEnd('.')}).");
        }
    }

    public IReadOnlyList<int> Encode(string text) => model.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false);

    public string Decode(IEnumerable<int> ids) => model.Decode(ids);
}
