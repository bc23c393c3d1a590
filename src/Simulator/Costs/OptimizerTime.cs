using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// The Adam step is memory-bound: per parameter it reads and writes the optimizer states (fp32 master weight, m and v:
/// 24 B), reads the gradient for the update and once more for the gradient-norm clip (2 x 4 B with fp32 main gradients), and
/// writes the bf16 weight (2 B): 34 B. 16-bit main gradients are first copied to fp32 ones the step reads (Megatron's
/// _copy_model_grads_to_main_grads, and the distributed optimizer's shard_model_grad.float(): read 2 B, write 4 B), except under
/// the precision-aware optimizer, whose FusedAdam reads them as they are. With parameter remainders it also reads the bf16
/// weight (the master weight's high half); in fp32 training the weights are the master. With the distributed optimizer each
/// rank updates its 1/d shard. SGD's step (Transformer Engine's FusedSGD, one pass as FusedAdam's) moves its own states the same
/// way (<see cref="OptimizerStates"/>: 8 B with momentum): 2·8 + 2·4 + 2 = 26 B in bf16.
/// fp16 training scales the loss, so before the step every main gradient is unscaled and checked for inf/NaN in one more
/// pass that reads and writes it (Megatron-LM megatron/core/optimizer/optimizer.py at d98e8a64,
/// MixedPrecisionOptimizer._unscale_main_grads_and_check_for_nan: torch._amp_foreach_non_finite_check_and_unscale_ over the
/// main gradients, whether the scale is dynamic or constant, then a one-float all-reduce of found_inf): 8 B more with fp32
/// main gradients.
/// Every iteration also starts by zeroing the gradient buffer the backward passes accumulate into (Megatron-LM
/// megatron/training/training.py train_step: model_chunk.zero_grad_buffer(), a fill of each bucket's grad_data): one write of
/// every gradient the rank holds (<see cref="ModelState.Bytes"/>: the whole buffer, or its 1/d shard under ZeRO 2 and 3).
/// </summary>
public static class OptimizerTime
{
    public static double BytesPerParameter(RunDescription c)
    {
        var p = c.Precision;
        var adam = c.AdamOrDefault;
        double weight = Activations.BytesPerElement(p);
        double states = OptimizerStates.BytesPerParameter(c) + (p == Precision.Fp32 ? weight : 0);
        double weightTraffic = p == Precision.Fp32 ? 0 : adam.ParamRemainders(p) ? 2 * weight : weight;
        double grad = DataParallelComm.GradientBytesPerParameter(c);
        double gradTraffic = grad == 4 || adam.PrecisionAware ? 2 * grad : grad + 4 + 2 * 4;
        double unscale = p == Precision.Fp16 ? 2 * (adam.PrecisionAware ? grad : 4) : 0;
        return 2 * states + gradTraffic + weightTraffic + unscale;
    }

    public static double Step(double parameters, RunDescription c, GpuSpec gpu)
    {
        double shard = c.ZeroStage >= 1 ? c.DataParallel * c.ContextParallel : 1;
        return ComputeTime.MemoryBound(parameters / shard * BytesPerParameter(c) + ModelState.Bytes(parameters, c).Gradients, gpu);
    }
}
