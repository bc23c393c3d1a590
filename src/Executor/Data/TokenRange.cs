namespace Harness.Executor.Data;

/// <summary>
/// Token ids checked against the model's vocabulary before they reach the embedding: an id past it is a user's
/// mismatch of data and model (say GPT-2 BPE data under a small --vocab-size), which libtorch would report as an
/// index error deep in the embedding or cross-entropy, or on a GPU as a device-side assert.
/// </summary>
public static class TokenRange
{
    /// <summary>Throws <see cref="InvalidDataException"/> naming the first id outside [0, vocab).</summary>
    public static void Check(ReadOnlySpan<long> tokens, long vocab)
    {
        foreach (var t in tokens)
            if (t < 0 || t >= vocab)
                throw new InvalidDataException($"the data holds token id {t}, outside --vocab-size {vocab}; use a model whose vocabulary covers the tokenizer's ({Gpt2Tokenizer.VocabSize} for GPT-2 BPE).");
    }
}
