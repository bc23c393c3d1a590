using Harness.Executor.Autograd;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Fused;

/// <summary>
/// The word embedding lookup, with the learned position embedding added when given, as one kernel
/// (<see cref="GptKernels.EmbeddingForward"/>): the unfused path gathers (reads and writes h per token) and adds the positions
/// (reads 2h, writes h). Under tensor parallelism the table is this rank's rows from <c>vocabStart</c>, and an id outside
/// them gives a zero row (Megatron's VocabParallelEmbedding masks them the same way before its all-reduce); positions are
/// then added after the all-reduce by the caller, once. Backward is libtorch's embedding backward: the word gradient an
/// index-add of the output gradient's rows (out-of-shard ids add into a spare row past the table, dropped), the position
/// gradient the sum over the batch, added at the positions' rows.
/// </summary>
public sealed class EmbeddingFunction : GuardedSingleTensorFunction<EmbeddingFunction>
{
    public override string Name => nameof(EmbeddingFunction);

    /// <summary>Embeddings [b, s, h] of ids [b, s] in this rank's rows of <paramref name="word"/> from <paramref name="vocabStart"/>.</summary>
    public static Tensor Apply(Tensor ids, Tensor word, long vocabStart) => apply(ids, word, vocabStart);

    /// <summary>The same plus <paramref name="position"/>'s rows <paramref name="positionIds"/> [s] (the sequence's positions).</summary>
    public static Tensor Apply(Tensor ids, Tensor word, long vocabStart, Tensor position, Tensor positionIds) =>
        apply(ids, word, vocabStart, position, positionIds);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var tokens = (Tensor)vars[0];
        Tensor ids = tokens.reshape(-1).to(ScalarType.Int64).contiguous(), word = ((Tensor)vars[1]).contiguous();
        long vocabStart = (long)vars[2];
        Tensor? position = vars.Length > 3 ? ((Tensor)vars[3]).contiguous() : null;
        Tensor? positionIds = vars.Length > 3 ? ((Tensor)vars[4]).to(ScalarType.Int64).contiguous() : null;
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
        long vocabCount = wordShape[0], h = wordShape[1];
        var dy = gradOutput.reshape(-1, h);
        using var one = 1.ToScalar();
        // This rank's rows, and one spare row past them that out-of-shard ids add into.
        var local = saved[0] - (long)ctx.get_data("vocabStart");
        local.masked_fill_(local.lt(0).logical_or_(local.ge(vocabCount)), vocabCount);
        var dword = zeros(new[] { vocabCount + 1, h }, dtype: dy.dtype, device: dy.device).index_add_(0, local, dy, one).narrow(0, 0, vocabCount);
        Tensor? dposition = null;
        if (saved.Count > 1)
        {
            var positionIds = saved[1];
            var perPosition = gradOutput.reshape(-1, positionIds.numel(), h).sum(0);
            dposition = zeros((long[])ctx.get_data("position"), dtype: dy.dtype, device: dy.device).index_add_(0, positionIds, perPosition, one)
                .MoveToOuterDisposeScope();
        }
        return GradientHandOver.Return(gradOutput, null, dword.MoveToOuterDisposeScope(), null, dposition, null);
    }
}
