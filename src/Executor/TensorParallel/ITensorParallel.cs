using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>Makes a full (unsharded) weight of the given shape, in float32, on the model's device.</summary>
public delegate Tensor InitMethod(long[] shape);

/// <summary>
/// THE SEAM between the transformer blocks and tensor parallelism (Megatron-core's tensor_parallel/ package).
/// Blocks never build a linear, an embedding or a loss themselves: they ask this factory, so the serial
/// implementation (<see cref="SerialTensorParallel"/>) and a tensor-parallel one (column/row-parallel linears with
/// their f/g communication operators, vocab-parallel embedding and cross-entropy) swap without touching the blocks.
/// Contract, as in Megatron (Shoeybi et al. 2019, section 3):
/// - a column-parallel linear returns this rank's slice of the output features (gather_output = false);
/// - a row-parallel linear takes this rank's slice of the input features (input_is_parallel = true) and returns the
///   full output, reduced over the group;
/// - blocks size heads, query groups and the FFN by <see cref="WorldSize"/> (local = global / WorldSize);
/// - every weight is made by an <see cref="InitMethod"/> at its FULL shape and the factory keeps this rank's shard,
///   so a parallel model holds exactly the slices of the serial model built from the same seed.
/// </summary>
public interface ITensorParallel
{
    /// <summary>Ranks in the tensor-parallel group (1 for the serial model).</summary>
    int WorldSize { get; }

    /// <summary>
    /// Linear y = x·Wᵀ (+ b) whose output features are split over the group. <paramref name="stride"/> is Megatron's:
    /// the output is made of that many equal parts (e.g. SwiGLU's gate and up), and each part is split separately
    /// so every rank holds its slice of each part, in the same order.
    /// </summary>
    LinearLayer ColumnParallelLinear(long inFeatures, long outFeatures, bool bias, InitMethod init, int stride = 1);

    /// <summary>Linear whose input features are split over the group; the output is summed over the group.</summary>
    LinearLayer RowParallelLinear(long inFeatures, long outFeatures, bool bias, InitMethod init);

    /// <summary>This rank's rows of a [vocab, hidden] table (word embedding or untied output layer).</summary>
    Parameter VocabParallelWeight(long vocabSize, long hiddenSize, InitMethod init);

    /// <summary>Looks token ids up in a vocab-parallel table; returns full embeddings on every rank.</summary>
    Tensor EmbeddingLookup(Tensor tokens, Tensor weight);

    /// <summary>
    /// The same lookup through the fused embedding kernel (Fused.EmbeddingFunction: bf16 tables on a GPU), plus
    /// <paramref name="position"/>'s rows <paramref name="positionIds"/> (the sequence's positions) once, after the
    /// vocabulary-parallel all-reduce: on one rank inside the kernel, under tensor parallelism by a libtorch add after it.
    /// </summary>
    Tensor FusedEmbeddingLookup(Tensor tokens, Tensor weight, Tensor position, Tensor positionIds);

    /// <summary>What the embeddings pass through before the first layer (sequence-parallel scatter, CAAT-Net's f; serial: nothing).</summary>
    Tensor EnterDecoder(Tensor embeddings);

    /// <summary>Output layer: logits over this rank's vocabulary slice, [.., vocab/t].</summary>
    Tensor Logits(Tensor hidden, Tensor weight);

    /// <summary>Per-token cross-entropy (float32) of vocab-parallel logits against the labels.</summary>
    Tensor CrossEntropy(Tensor logits, Tensor labels);
}
