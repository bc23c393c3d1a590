using Harness.Executor.Autograd;
using Harness.Executor.Distributed;
using static TorchSharp.torch;

namespace Harness.Executor.TensorParallel;

/// <summary>
/// Megatron's communication operators (tensor_parallel/mappings.py; Shoeybi et al. 2019 section 3 calls the first
/// two f and g) as custom autograd functions: each pairs a forward collective with its adjoint in backward.
/// | operator | forward | backward |
/// | f  CopyToTensorParallelRegion | identity | all-reduce |
/// | g  ReduceFromTensorParallelRegion | all-reduce | identity |
/// | ScatterToSequenceParallelRegion | keep own sequence block | all-gather |
/// | GatherFromSequenceParallelRegion | all-gather sequence | reduce-scatter |
/// | ReduceScatterToSequenceParallelRegion | reduce-scatter sequence | all-gather |
/// | AllToAll | block r of the first dimension to rank r | the same all-to-all (_AllToAll with equal splits) |
/// Backward runs outside the caller's dispose scopes (libtorch's autograd), so results leave no scope behind.
/// </summary>
public static class Mappings
{
    public static Tensor CopyToTensorParallelRegion(Tensor x, ICommunicator tp) =>
        tp.Size == 1 ? x : CopyToRegion.apply(x, tp);

    public static Tensor ReduceFromTensorParallelRegion(Tensor x, ICommunicator tp) =>
        tp.Size == 1 ? x : ReduceFromRegion.apply(x, tp);

    public static Tensor ScatterToSequenceParallelRegion(Tensor x, ICommunicator tp) =>
        tp.Size == 1 ? x : ScatterToSequence.apply(x, tp);

    public static Tensor GatherFromSequenceParallelRegion(Tensor x, ICommunicator tp) =>
        tp.Size == 1 ? x : GatherFromSequence.apply(x, tp);

    public static Tensor ReduceScatterToSequenceParallelRegion(Tensor x, ICommunicator tp) =>
        tp.Size == 1 ? x : ReduceScatterToSequence.apply(x, tp);

    /// <summary>Blocks of the first dimension exchanged over <paramref name="group"/> (block r to rank r): the all-to-all is its
    /// own adjoint, as block r of the result came from rank r's block of this rank.</summary>
    public static Tensor AllToAll(Tensor x, ICommunicator group) =>
        group.Size == 1 ? x : AllToAllExchange.apply(x, group);

    /// <summary>Base of the six operators: forward and backward are each one collective (or none) on one tensor.</summary>
    public abstract class Operator<T> : GuardedSingleTensorFunction<T> where T : Operator<T>, new()
    {
        protected abstract Tensor Forward(Tensor x, ICommunicator tp);
        protected abstract Tensor Backward(Tensor grad, ICommunicator tp);

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var tp = (ICommunicator)vars[1];
            ctx.save_data("tp", tp);
            return Forward((Tensor)vars[0], tp);
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad) =>
            GradientHandOver.Return(grad, Backward(grad, (ICommunicator)ctx.get_data("tp")), null);
    }

    public sealed class CopyToRegion : Operator<CopyToRegion>
    {
        public override string Name => "copy_to_tensor_model_parallel_region";
        protected override Tensor Forward(Tensor x, ICommunicator tp) => x.alias();
        protected override Tensor Backward(Tensor grad, ICommunicator tp) => Collectives.AllReduce(grad, tp);
    }

    public sealed class ReduceFromRegion : Operator<ReduceFromRegion>
    {
        public override string Name => "reduce_from_tensor_model_parallel_region";
        protected override Tensor Forward(Tensor x, ICommunicator tp) => Collectives.AllReduce(x, tp);
        protected override Tensor Backward(Tensor grad, ICommunicator tp) => grad;
    }

    public sealed class ScatterToSequence : Operator<ScatterToSequence>
    {
        public override string Name => "scatter_to_sequence_parallel_region";
        protected override Tensor Forward(Tensor x, ICommunicator tp) => Collectives.Split(x, tp);
        protected override Tensor Backward(Tensor grad, ICommunicator tp) => Collectives.AllGather(grad, tp);
    }

    public sealed class GatherFromSequence : Operator<GatherFromSequence>
    {
        public override string Name => "gather_from_sequence_parallel_region";
        protected override Tensor Forward(Tensor x, ICommunicator tp) => Collectives.AllGather(x, tp);
        protected override Tensor Backward(Tensor grad, ICommunicator tp) => Collectives.ReduceScatter(grad, tp);
    }

    public sealed class AllToAllExchange : Operator<AllToAllExchange>
    {
        public override string Name => "all_to_all";
        protected override Tensor Forward(Tensor x, ICommunicator group) => Collectives.AllToAll(x, group);
        protected override Tensor Backward(Tensor grad, ICommunicator group) => Collectives.AllToAll(grad, group);
    }

    public sealed class ReduceScatterToSequence : Operator<ReduceScatterToSequence>
    {
        public override string Name => "reduce_scatter_to_sequence_parallel_region";
        protected override Tensor Forward(Tensor x, ICommunicator tp) => Collectives.ReduceScatter(x, tp);
        protected override Tensor Backward(Tensor grad, ICommunicator tp) => Collectives.AllGather(grad, tp);
    }
}
