using static Harness.Executor.Native.HeldScalars;
using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The word embedding lookup, with the learned position embedding added when given, as one kernel
/// (<see cref="GptKernels.EmbeddingForward"/>): the unfused path gathers (reads and writes h per token) and adds the positions
/// (reads 2h, writes h). Under tensor parallelism the table is this rank's rows from <c>vocabStart</c>, and an id outside
/// them gives a zero row (Megatron's VocabParallelEmbedding masks them the same way before its all-reduce); positions are
/// then added after the all-reduce by the caller, once. Backward is the unfused lookup's (<see cref="Rows"/>): the word
/// gradient the output gradient's rows accumulated at their ids (out-of-shard ids add into a spare row past the table,
/// dropped); the position gradient the sum over the batch, added at the positions' rows.
/// </summary>
public sealed class EmbeddingFunction : GuardedSingleTensorFunction<EmbeddingFunction>
{
    public override string Name => nameof(EmbeddingFunction);

    /// <summary>Embeddings [b, s, h] of ids [b, s] in this rank's rows of <paramref name="word"/> from <paramref name="vocabStart"/>.</summary>
    public static Tensor Apply(Tensor ids, Tensor word, long vocabStart) => apply(ids, word, vocabStart);

    /// <summary>The same plus <paramref name="position"/>'s rows <paramref name="positionIds"/> [s] (the sequence's positions).</summary>
    public static Tensor Apply(Tensor ids, Tensor word, long vocabStart, Tensor position, Tensor positionIds) =>
        apply(ids, word, vocabStart, position, positionIds);

    /// <summary>
    /// The lookup without the kernel, [.., h] rows of <paramref name="table"/> at <paramref name="ids"/> [..]. On a GPU
    /// weight[ids], Megatron's deterministic-mode lookup (core/tensor_parallel/layers.py, VocabParallelEmbedding): libtorch's
    /// indexing backward sorts the ids and sums a repeated id's rows in float32 before one rounding, as F.embedding's
    /// backward does, in the same order every run, where index_select's backward adds them one at a time in the table's type
    /// with atomics (nondeterministic, PyTorch's reproducibility notes). On a CPU index_select, whose backward adds them in
    /// order, where indexing's backward adds with atomics across threads: CPU runs stay the same bits run after run.
    /// </summary>
    public static Tensor Rows(Tensor table, Tensor ids) =>
        table.is_cuda ? table.index([ids]) : table.index_select(0, ids.reshape(-1)).reshape([.. ids.shape, table.shape[1]]);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var tokens = (Tensor)vars[0];
        Tensor ids = tokens.reshape(-1).to(ScalarType.Int64).contiguous(), word = ((Tensor)vars[1]).contiguous();
        long vocabStart = (long)vars[2];
        Tensor? position = vars.Length > 3 ? ((Tensor)vars[3]).contiguous() : null;
        Tensor? positionIds = vars.Length > 3 ? ((Tensor)vars[4]).to(ScalarType.Int64).contiguous() : null;
        // The kernel reads raw pointers: tables it would read past are refused here, where libtorch's lookup would raise.
        if (word.dim() != 2 || word.dtype != ScalarType.BFloat16 || !word.is_cuda || !ids.is_cuda ||
            (position is not null && (position.dim() != 2 || position.shape[1] != word.shape[1] || position.dtype != word.dtype || !position.is_cuda ||
                                      positionIds!.numel() != tokens.shape[^1] || !positionIds.is_cuda)))
            throw new ArgumentException($"The fused embedding takes a bf16 CUDA table [rows, h], and positions [rows, h] of the same h and type with one id per sequence position; got ids [{string.Join(", ", tokens.shape)}], table [{string.Join(", ", word.shape)}] {word.dtype}" +
                                        (position is null ? "." : $", positions [{string.Join(", ", position.shape)}] {position.dtype}, {positionIds!.numel()} position ids."));
        var output = empty([.. tokens.shape, word.shape[1]], dtype: word.dtype, device: word.device);
        GptKernels.EmbeddingForward(ids, word, position, positionIds, vocabStart, output);
        ctx.save_for_backward(positionIds is null ? [ids] : [ids, positionIds]);
        ctx.save_data("word", word.shape);
        if (position is not null) ctx.save_data("position", position.shape);
        ctx.save_data("vocabStart", vocabStart);
        return output;
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var wordShape = (long[])ctx.get_data("word");
        bool positions = saved.Count > 1;
        var (dword, dposition) = Gradients(saved[0], gradOutput, (long)ctx.get_data("vocabStart"), wordShape[0],
            positions ? saved[1] : null, positions ? ((long[])ctx.get_data("position"))[0] : 0);
        dword.MoveToOuterDisposeScope();
        return positions
            ? GradientHandOver.Return(gradOutput, null, dword, null, dposition!.MoveToOuterDisposeScope(), null)
            : GradientHandOver.Return(gradOutput, null, dword, null);
    }

    /// <summary>
    /// The lookup's backward for ids [tokens] (int64) and the output gradient dy [.., h]: the gradient of this rank's
    /// <paramref name="vocabCount"/> rows from <paramref name="vocabStart"/> (dy's rows accumulated at their ids as <see cref="Rows"/>' backward accumulates them; an id outside them
    /// adds into a spare row past the table, which is dropped, so dy is not masked first) and, given the positions' rows
    /// <paramref name="positionIds"/> [s], the gradient of the [<paramref name="positionRows"/>, h] position table: dy summed
    /// over the batch, added at those rows.
    /// </summary>
    public static (Tensor Word, Tensor? Position) Gradients(Tensor ids, Tensor dy, long vocabStart, long vocabCount, Tensor? positionIds, long positionRows)
    {
        using var scope = NewDisposeScope();
        long h = dy.shape[^1];
        // Scalars held until libtorch has read them (a temporary one may be finalized during the call: ScriptedKernels).
        using Scalar zero = 0.ToScalar(), start = vocabStart.ToScalar(), spare = vocabCount.ToScalar();
        var local = ids.sub(start);
        local.masked_fill_(local.lt(zero).logical_or_(local.ge(spare)), spare);
        var rows = dy.reshape(-1, h);
        var word = zeros(new[] { vocabCount + 1, h }, dtype: dy.dtype, device: dy.device);
        // As the backward of Rows: indexing's on a GPU, index_select's on a CPU.
        if (dy.is_cuda) word.index_put_(rows, [local], accumulate: true);
        else word.index_add_(0, local, rows, One);
        word = word.narrow(0, 0, vocabCount);
        if (positionIds is null) return (word.MoveToOuterDisposeScope(), null);
        var perPosition = dy.reshape(-1, positionIds.numel(), h).sum(0L);
        var position = zeros(new[] { positionRows, h }, dtype: dy.dtype, device: dy.device).index_add_(0, positionIds, perPosition, One);
        return (word.MoveToOuterDisposeScope(), position.MoveToOuterDisposeScope());
    }
}
