namespace Harness.Executor.PipelineParallel;

/// <summary>One step of a pipeline schedule: the forward or backward pass of a micro-batch through a model chunk.</summary>
public readonly record struct PipelineOp(bool Forward, int MicroBatch, int Chunk);

/// <summary>
/// The order in which a pipeline rank runs its forward and backward passes (Megatron-core
/// pipeline_parallel/schedules.py; Narayanan et al. 2021 section 2.2):
/// - 1F1B (v = 1): min(pp − rank − 1, m) warm-up forwards, then one forward and one backward alternating, then
///   the remaining backwards; at most pp − rank micro-batches' activations are alive at once.
/// - interleaved 1F1B (v model chunks per rank): micro-batches go through the chunks in groups of pp; forward k
///   runs chunk (k mod pp·v) div pp on micro-batch (k div pp·v)·pp + k mod pp, backward k the same micro-batch
///   on chunk v − 1 − that; warm-up is (pp − rank − 1)·2 + (v − 1)·pp forwards (all of them when m = pp).
/// Pure: a list of operations, the same arithmetic as Megatron's get_model_chunk_id / get_microbatch_id.
/// </summary>
public static class PipelineSchedule
{
    public static IReadOnlyList<PipelineOp> Order(int pipelineSize, int rank, int virtualStages, int microBatches)
    {
        if (virtualStages > 1 && microBatches % pipelineSize != 0)
            throw new ArgumentException($"the interleaved schedule needs the number of micro-batches ({microBatches}) to be a multiple of --pipeline-model-parallel-size {pipelineSize}.");
        int total = microBatches * virtualStages;
        int warmup = virtualStages == 1
            ? Math.Min(pipelineSize - rank - 1, microBatches)
            : microBatches == pipelineSize ? total : Math.Min((pipelineSize - rank - 1) * 2 + (virtualStages - 1) * pipelineSize, total);
        var ops = new List<PipelineOp>(2 * total);
        for (int k = 0; k < warmup; k++) ops.Add(Op(true, k));
        for (int k = 0; k < total - warmup; k++)
        {
            ops.Add(Op(true, warmup + k));
            ops.Add(Op(false, k));
        }
        for (int k = total - warmup; k < total; k++) ops.Add(Op(false, k));
        return ops;

        PipelineOp Op(bool forward, int k)
        {
            int group = pipelineSize * virtualStages;
            int chunk = k % group / pipelineSize;
            int micro = k / group * pipelineSize + k % pipelineSize;
            return new PipelineOp(forward, micro, forward ? chunk : virtualStages - 1 - chunk);
        }
    }
}
