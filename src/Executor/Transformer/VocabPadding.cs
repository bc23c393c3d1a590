using Harness.Simulator.Specs;

namespace Harness.Executor.Transformer;

/// <summary>
/// Megatron-LM's --make-vocab-size-divisible-by (default 128; training/tokenizer _vocab_size_with_padding): the
/// embedding and output tables get rows up to the next multiple of that times the tensor-parallel size, so they split
/// evenly across ranks and every GEMM over the vocabulary has an aligned leading dimension (GPT-2's 50257 entries run
/// the logits GEMMs and the cross-entropy on unaligned, slower kernels; padded to 50304 they do not). Tokens stay below
/// the tokenizer's size, so the padded rows are never targets; they take part in the softmax as in Megatron.
/// </summary>
public static class VocabPadding
{
    public const int MegatronDefault = 128;

    /// <summary>The vocabulary size the tables get: the tokenizer's rounded up to a multiple of divisibleBy·t.</summary>
    public static int Padded(int vocab, int divisibleBy, int tensorParallel)
    {
        int multiple = Math.Max(1, divisibleBy) * Math.Max(1, tensorParallel);
        return (vocab + multiple - 1) / multiple * multiple;
    }

    /// <summary>The model with its tables padded (its tokenizer vocabulary is the spec's, before padding).</summary>
    public static ModelSpec Pad(ModelSpec m, int divisibleBy, int tensorParallel) =>
        m with { VocabSize = Padded(m.VocabSize, divisibleBy, tensorParallel) };
}
