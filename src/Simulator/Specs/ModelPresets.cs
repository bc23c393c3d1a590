namespace Harness.Simulator.Specs;

/// <summary>The models the reproduced papers use, by the names `--model` accepts.</summary>
public static class ModelPresets
{
    // GPT as in Narayanan et al. 2021 (arXiv 2104.04473), Table 1: 4h MLP with GeLU, LayerNorm,
    // learned positions, tied embeddings, s 2048, V 51200.
    private static ModelSpec Gpt(string name, int layers, int hidden, int heads, int seq = 2048, int vocab = 51200) =>
        new(name, layers, hidden, heads, heads, 4 * hidden, vocab, seq,
            Activation.Gelu, Normalization.LayerNorm, PositionEmbedding.Learned, TiedEmbeddings: true, HiddenDropout: 0.1, AttentionDropout: 0.1);

    // Llama as in the Megatron-Kwai ATC'24 artifact: SwiGLU, RMSNorm, rotary, untied embeddings, V 32004.
    private static ModelSpec Llama(string name, int layers, int hidden, int ffn, int heads, int groups, int seq, int vocab = 32004) =>
        new(name, layers, hidden, heads, groups, ffn, vocab, seq,
            Activation.SwiGlu, Normalization.RmsNorm, PositionEmbedding.Rotary, TiedEmbeddings: false, HiddenDropout: 0, AttentionDropout: 0);

    /// <summary>Every preset, keyed by its name.</summary>
    public static IReadOnlyDictionary<string, ModelSpec> All { get; } = new[]
    {
        Gpt("gpt-1.7b", 24, 2304, 24),
        Gpt("gpt-3.6b", 30, 3072, 32),
        Gpt("gpt-7.5b", 36, 4096, 32),
        Gpt("gpt-18.4b", 40, 6144, 48),
        Gpt("gpt-39.1b", 48, 8192, 64),
        Gpt("gpt-76.1b", 60, 10240, 80),
        Gpt("gpt-145.6b", 80, 12288, 96),
        Gpt("gpt-310.1b", 96, 16384, 128),
        Gpt("gpt-529.6b", 105, 20480, 128),
        Gpt("gpt-1t", 128, 25600, 160),
        // GPT-2 (Radford et al. 2019) sizes at s 1024 and the GPT-2 BPE vocabulary.
        Gpt("gpt2-large", 36, 1280, 20, seq: 1024, vocab: 50257),
        Gpt("gpt2-xl", 48, 1600, 25, seq: 1024, vocab: 50257),
        // What `harness run` trains with no arguments: small enough for a minute on two CPU cores, GPT-2 BPE so the shipped
        // corpus tokenizes as is, without dropout.
        Gpt("tiny-gpt2", 2, 64, 4, seq: 64, vocab: 50257) with { HiddenDropout = 0, AttentionDropout = 0 },
        // Megatron-Kwai ATC'24 artifact configurations (REFERENCE.md); s is set per experiment.
        Llama("llama-7b", 32, 4096, 11008, 32, 32, seq: 4096),
        Llama("llama-65b", 80, 8192, 22016, 64, 64, seq: 8192),
        Llama("llama-175b", 96, 12288, 32768, 96, 96, seq: 8192),
        Llama("llama2-70b", 80, 8192, 28672, 64, 8, seq: 4096),
        // Llama 3.1 405B (Llama 3 paper, arXiv 2407.21783, Table 3): 126 layers, h 16384, ffn 53248, 128 heads, 8 KV heads,
        // vocabulary 128,000 (the released tokenizer's 128,256), RoPE base 500,000.
        Llama("llama3-405b", 126, 16384, 53248, 128, 8, seq: 8192, vocab: 128256) with { RotaryBase = 500000 },
        // CAAT-Net fork's training scripts (arXiv 2506.19645): 130M, 1B (TinyLlama shape), 7B (Llama-2 7B);
        // Llama-2 tokenizer, V 32000.
        Llama("caat-130m", 12, 768, 2048, 16, 16, seq: 1024, vocab: 32000),
        Llama("caat-1b", 22, 2048, 5632, 32, 8, seq: 2048, vocab: 32000) with { RotaryBase = 500000 }, // its script's --rotary-base
        Llama("caat-7b", 32, 4096, 11008, 32, 32, seq: 4096, vocab: 32000),
    }.ToDictionary(m => m.Name, StringComparer.OrdinalIgnoreCase);
}
