using Harness.Simulator.Specs;

namespace Harness.Executor.Training;

/// <summary>
/// What `harness run` trains with no arguments: a tiny GPT-2-style model (GPT-2 BPE vocabulary, so the shipped corpus
/// tokenizes as-is) on the shipped corpus, on CPU, sized to finish in about a minute on two cores.
/// </summary>
public static class DefaultRun
{
    public static ModelSpec Model => ModelPresets.All["tiny-gpt2"];

    /// <summary>Its batch and schedule as flags, which a user's flags override.</summary>
    public static IReadOnlyList<string> Arguments { get; } =
    [
        "--model", "tiny-gpt2", "--micro-batch-size", "4", "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-fraction", "0.07",
        "--lr-decay-style", "cosine", "--log-interval", "10",
    ];

    /// <summary>The shipped corpus, copied next to the program at build time.</summary>
    public static string DataPath => Path.Combine(AppContext.BaseDirectory, "corpus", "factbook_text_document");
}
