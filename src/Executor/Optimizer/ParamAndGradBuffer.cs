using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// Megatron's mixed-precision layout (distributed/param_and_grad_buffer.py, Micikevicius et al. 2018) over flat,
/// contiguous buffers, so the optimizer is a handful of kernels per step instead of a loop over parameters:
/// - <see cref="Params"/>: the model's weights in the compute type (bf16); every parameter is a view into it;
/// - <see cref="Grads"/>: where autograd accumulates one micro-batch's gradients (each parameter's .grad is a view);
/// - <see cref="MainGrads"/>: float32 gradients accumulated over the micro-batches of a step;
/// - <see cref="Master"/>: float32 master weights the optimizer updates, then casts back into <see cref="Params"/>.
/// Under float32 (or float64) compute the buffers coincide: Params is Master and Grads is MainGrads.
/// Weights with two or more dimensions come first, so weight decay (not applied to biases and norm weights, as
/// in Megatron) touches the prefix [0, <see cref="DecayedCount"/>). With gradient-accumulation fusion the weights of
/// <see cref="IMainGradWeight"/> layers come first of all, [0, <see cref="FusedCount"/>): their GEMMs add straight into
/// <see cref="MainGrads"/>, so only the rest is folded after each micro-batch.
/// </summary>
public sealed class ParamAndGradBuffer : IDisposable
{
    public Tensor Params { get; }
    public Tensor Grads { get; }
    public Tensor MainGrads { get; }
    public Tensor Master { get; }
    public long DecayedCount { get; }
    public long FusedCount { get; }
    public long Count { get; }
    public bool MixedPrecision { get; }

    /// <summary>Names and shapes in buffer order (checkpoints and gradient checks use them).</summary>
    public IReadOnlyList<(string Name, Parameter Parameter, long Offset)> Layout { get; }

    /// <param name="masterWeights">False when an optimizer keeps its own (sharded) float32 master weights, as
    /// Megatron's distributed optimizer does: then, under mixed precision, <see cref="Master"/> is empty.</param>
    /// <param name="gradientAccumulationFusion">Under mixed precision, let <see cref="IMainGradWeight"/> layers add their
    /// weight gradients into the main gradients themselves (the caller checked that the device supports it).</param>
    public ParamAndGradBuffer(nn.Module module, ScalarType computeDtype, bool masterWeights = true, bool gradientAccumulationFusion = false)
    {
        var masterDtype = MasterDtypeOf(computeDtype);
        var fusedLayers = gradientAccumulationFusion && computeDtype != masterDtype
            ? module.modules().OfType<IMainGradWeight>().ToList()
            : [];
        bool IsFused(Parameter p) => fusedLayers.Any(l => ReferenceEquals(l.Weight, p));
        var named = module.named_parameters().ToList();
        var ordered = named.Where(p => IsFused(p.parameter))
            .Concat(named.Where(p => p.parameter.dim() >= 2 && !IsFused(p.parameter)))
            .Concat(named.Where(p => p.parameter.dim() < 2)).ToList();
        if (named.FirstOrDefault(p => p.parameter.dtype != computeDtype) is { name: not null } odd)
            throw new ArgumentException($"parameter {odd.name} is {odd.parameter.dtype}; every parameter must be {computeDtype}.");
        var device = named[0].parameter.device;
        Count = ordered.Sum(p => p.parameter.numel());
        DecayedCount = ordered.Where(p => p.parameter.dim() >= 2).Sum(p => p.parameter.numel());
        FusedCount = ordered.Where(p => IsFused(p.parameter)).Sum(p => p.parameter.numel());
        MixedPrecision = computeDtype != masterDtype;
        Master = empty(masterWeights || !MixedPrecision ? Count : 0, dtype: masterDtype, device: device);
        MainGrads = zeros(Count, dtype: masterDtype, device: device);
        Params = MixedPrecision ? empty(Count, dtype: computeDtype, device: device) : Master;
        Grads = MixedPrecision ? zeros(Count, dtype: computeDtype, device: device) : MainGrads;
        var layout = new List<(string, Parameter, long)>();
        long offset = 0;
        using (no_grad())
        {
            foreach (var (name, p) in ordered)
            {
                long n = p.numel();
                if (Master.numel() == Count) Master.narrow(0, offset, n).copy_(p.reshape(-1));
                var paramView = Params.narrow(0, offset, n).view(p.shape);
                if (MixedPrecision) paramView.copy_(p);
                p.set_(paramView); // same dtype: the parameter now lives in the flat buffer
                if (fusedLayers.FirstOrDefault(l => ReferenceEquals(l.Weight, p)) is { } layer)
                    layer.AccumulateInto(MainGrads.narrow(0, offset, n).view(p.shape));
                else
                    p.grad = Grads.narrow(0, offset, n).view(p.shape);
                layout.Add((name, p, offset));
                offset += n;
            }
        }
        Layout = layout;
    }

    /// <summary>Float32 master weights under bf16/fp16 compute; otherwise the compute type itself.</summary>
    public static ScalarType MasterDtypeOf(ScalarType computeDtype) =>
        computeDtype is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : computeDtype;

    /// <summary>After a micro-batch's backward: fold its bf16 gradients into the float32 accumulator (all but the
    /// fused layers' weights, whose GEMMs accumulated there already).</summary>
    public void AccumulateMicroBatch() => AccumulateRange(FusedCount, Count - FusedCount);

    /// <summary>Folds the bf16 gradients in [offset, offset + count) into the float32 accumulator (one bucket's, when its gradients are final).</summary>
    public void AccumulateRange(long offset, long count)
    {
        if (!MixedPrecision) return;
        using (no_grad())
        {
            using var grads = Grads.narrow(0, offset, count);
            using var main = MainGrads.narrow(0, offset, count);
            main.add_(grads);
            grads.zero_();
        }
    }

    /// <summary>Start of a step: clear the accumulated gradients.</summary>
    public void ZeroGrads()
    {
        using (no_grad()) MainGrads.zero_();
    }

    /// <summary>After the optimizer: cast the master weights into the model's weights.</summary>
    public void CopyMasterToParams()
    {
        if (!KeepsSeparateMaster) return;
        using (no_grad()) Params.copy_(Master);
    }

    /// <summary>After weights in [offset, offset + count) of <see cref="Params"/> were set directly (loading weights, the
    /// tied embedding's first copy): refresh the float32 master weights there, when this buffer keeps its own.</summary>
    public void CopyParamsToMaster(long offset, long count)
    {
        if (!KeepsSeparateMaster) return;
        using (no_grad()) Master.narrow(0, offset, count).copy_(Params.narrow(0, offset, count));
    }

    /// <summary>Float32 master weights apart from <see cref="Params"/> (mixed precision, not the distributed optimizer's shards).</summary>
    private bool KeepsSeparateMaster => MixedPrecision && Master.numel() == Count;

    public void Dispose()
    {
        if (MixedPrecision)
        {
            Params.Dispose();
            Grads.Dispose();
        }
        Master.Dispose();
        MainGrads.Dispose();
    }
}
