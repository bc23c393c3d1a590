using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>
/// What the blocks need of context parallelism (Megatron-core's attention with a context-parallel group): the global
/// positions of this rank's tokens, for rotary or learned position embeddings, and attention over every rank's keys and
/// values. The seam keeps the transformer below the parallelism that implements it (ContextParallel.ContextParallelism),
/// which builds its attention from the transformer's kernels and dropout streams.
/// </summary>
public interface IContextParallel
{
    /// <summary>Global positions of this rank's tokens when it holds <paramref name="localLength"/> of each sequence.</summary>
    Tensor Positions(long localLength, Device device);

    /// <summary>dropout(softmax(QKᵀ/√d + causal mask))·V over every rank's keys and values; q [b, heads, s/cp, d], k and v
    /// [b, groups, s/cp, d].</summary>
    Tensor Attention(Tensor q, Tensor k, Tensor v, double dropout, DropoutRng? rng);
}
