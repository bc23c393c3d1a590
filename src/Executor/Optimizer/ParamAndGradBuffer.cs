using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Optimizer;

/// <summary>
/// Megatron's mixed-precision layout (distributed/param_and_grad_buffer.py, Micikevicius et al. 2018) over flat,
/// contiguous buffers, so the optimizer is a handful of kernels per step instead of a loop over parameters:
/// - <see cref="Params"/>: the model's weights in the compute type (bf16); every parameter is a view into it;
/// - <see cref="Grads"/>: where autograd accumulates one micro-batch's gradients (each parameter's .grad is a view);
///   under gradient-accumulation fusion it holds only the unfused parameters, packed (see <see cref="Folded"/>);
/// - <see cref="MainGrads"/>: gradients accumulated over the micro-batches of a step, in Megatron's grad-buffer dtype: float32
///   with --accumulate-allreduce-grads-in-fp32 (bf16's default), else the compute type (fp16 without that flag,
///   --grad-reduce-in-bf16, --main-grads-dtype bf16): group_params_for_buffers in distributed/param_and_grad_buffer.py
///   at NVIDIA/Megatron-LM d98e8a6 makes the buffer float32 when grad_reduce_in_fp32, else the parameter's dtype, and
///   param.main_grad is a view of it, so each micro-batch's fold rounds to that dtype and the data-parallel collectives
///   run in it;
/// - <see cref="Master"/>: float32 master weights the optimizer updates, then casts back into <see cref="Params"/>.
/// Under float32 (or float64) compute the buffers coincide: Params is Master and Grads is MainGrads.
/// Weights with two or more dimensions come first, so weight decay (not applied to biases and norm weights, as
/// in Megatron) touches the prefix [0, <see cref="DecayedCount"/>). With gradient-accumulation fusion the GEMMs of
/// <see cref="IMainGradWeight"/> layers add their weights' gradients straight into <see cref="MainGrads"/>, so only the
/// <see cref="Folded"/> ranges (everything else) are folded after each micro-batch. The layout itself does not depend
/// on fusion: a checkpoint (flat buffers) loads with fusion on or off, the data-parallel buckets and the order in which
/// backward completes them stay those of the unfused run, and ranks whose devices disagree on fusion still agree on
/// every offset their collectives use.
/// </summary>
public sealed class ParamAndGradBuffer : IDisposable
{
    public Tensor Params { get; }
    public Tensor Grads { get; }
    public Tensor MainGrads { get; }
    public Tensor Master { get; }
    public long DecayedCount { get; }
    /// <summary>Elements whose gradients the fused layers' GEMMs accumulate themselves (their bf16 <see cref="Grads"/> stay zero).</summary>
    public long FusedCount { get; }
    /// <summary>The ranges autograd writes into <see cref="Grads"/> and the folds add into <see cref="MainGrads"/>, in order:
    /// the whole buffer less the fused layers' weights. Offset is the range's place in the buffer, GradOffset its place in
    /// <see cref="Grads"/>, which skips the fused weights (they need no bf16 gradient: 2 bytes per parameter saved).</summary>
    public IReadOnlyList<(long Offset, long Count, long GradOffset)> Folded { get; }
    public long Count { get; }
    public bool MixedPrecision { get; }

    /// <summary>Names and shapes in buffer order (checkpoints and gradient checks use them).</summary>
    public IReadOnlyList<(string Name, Parameter Parameter, long Offset)> Layout { get; }

    /// <param name="masterWeights">False when an optimizer keeps its own (sharded) float32 master weights, as
    /// Megatron's distributed optimizer does: then, under mixed precision, <see cref="Master"/> is empty.</param>
    /// <param name="gradientAccumulationFusion">Under mixed precision, let <see cref="IMainGradWeight"/> layers add their
    /// weight gradients into the main gradients themselves (the caller checked that the device supports it).</param>
    /// <param name="gradients">False under ZeRO 2 and 3, whose gradients are reduce-scattered into the optimizer's shards after
    /// every micro-batch (DataParallel.GradientSync): no <see cref="Grads"/> nor <see cref="MainGrads"/> is kept; autograd
    /// allocates each parameter's .grad and the reduction frees it.</param>
    /// <param name="weights">False under ZeRO 3, whose weights live in gather units (DataParallel.PartitionedParams): the
    /// parameters keep the storage they were created with and <see cref="Params"/> is empty.</param>
    /// <param name="mainGradsInFp32">Megatron's accumulate_allreduce_grads_in_fp32 (RunDescription.GradientsInFp32): false
    /// keeps <see cref="MainGrads"/> in the compute type.</param>
    public ParamAndGradBuffer(nn.Module module, ScalarType computeDtype, bool masterWeights = true, bool gradientAccumulationFusion = false,
        bool gradients = true, bool weights = true, bool mainGradsInFp32 = true)
    {
        var masterDtype = MasterDtypeOf(computeDtype);
        var fusedLayers = gradientAccumulationFusion && gradients && computeDtype != masterDtype
            ? module.modules().OfType<IMainGradWeight>().ToList()
            : [];
        bool IsFused(Parameter p) => fusedLayers.Any(l => ReferenceEquals(l.Weight, p));
        var named = module.named_parameters().ToList();
        var ordered = InBufferOrder(named, p => p.parameter.dim()).ToList();
        if (named.FirstOrDefault(p => p.parameter.dtype != computeDtype) is { name: not null } odd)
            throw new ArgumentException($"parameter {odd.name} is {odd.parameter.dtype}; every parameter must be {computeDtype}.");
        var device = named[0].parameter.device;
        Count = ordered.Sum(p => p.parameter.numel());
        DecayedCount = ordered.Where(p => p.parameter.dim() >= 2).Sum(p => p.parameter.numel());
        FusedCount = ordered.Where(p => IsFused(p.parameter)).Sum(p => p.parameter.numel());
        MixedPrecision = computeDtype != masterDtype;
        Master = empty((masterWeights || !MixedPrecision) && weights ? Count : 0, dtype: masterDtype, device: device);
        MainGrads = zeros(gradients ? Count : 0, dtype: mainGradsInFp32 ? masterDtype : computeDtype, device: device);
        Params = !weights ? empty(0, dtype: computeDtype, device: device) : MixedPrecision ? empty(Count, dtype: computeDtype, device: device) : Master;
        Grads = MixedPrecision || !gradients ? zeros(gradients ? Count - FusedCount : 0, dtype: computeDtype, device: device) : MainGrads;
        var layout = new List<(string, Parameter, long)>();
        var folded = new List<(long Offset, long Count, long GradOffset)>();
        long offset = 0, gradOffset = 0;
        using (no_grad())
        {
            foreach (var (name, p) in ordered)
            {
                // Every view made here is held by this scope until libtorch has returned from the call that reads it:
                // TorchSharp passes only a temporary's native handle, so an unreferenced view (the narrow under a view, the
                // target of a copy_ once the JIT inlines copy_) could be finalized, and its at::Tensor freed, mid-call.
                using var scope = NewDisposeScope();
                long n = p.numel();
                if (Master.numel() == Count) Master.narrow(0, offset, n).copy_(p.reshape(-1));
                if (weights)
                {
                    var paramView = Params.narrow(0, offset, n).view(p.shape);
                    if (MixedPrecision) paramView.copy_(p);
                    p.set_(paramView); // same dtype: the parameter now lives in the flat buffer
                }
                // Without gradient buffers autograd allocates each .grad, and the per-micro-batch reduction frees it.
                if (gradients && fusedLayers.FirstOrDefault(l => ReferenceEquals(l.Weight, p)) is { } layer)
                    layer.AccumulateInto(MainGrads.narrow(0, offset, n).view(p.shape).DetachFromDisposeScope());
                else if (gradients)
                {
                    p.grad = Grads.narrow(0, gradOffset, n).view(p.shape);
                    // Adjacent unfused parameters make one range, so a fold is a few kernels, not one per parameter.
                    if (folded.Count > 0 && folded[^1].Offset + folded[^1].Count == offset)
                        folded[^1] = folded[^1] with { Count = folded[^1].Count + n };
                    else folded.Add((offset, n, gradOffset));
                    gradOffset += n;
                }
                layout.Add((name, p, offset));
                offset += n;
            }
        }
        Layout = layout;
        Folded = folded;
    }

    /// <summary>The order parameters take in the buffer: those with two or more dimensions first (the weight-decayed prefix),
    /// then the rest, each in the module's order. What reads a checkpoint's flat buffer without the model uses it too.</summary>
    public static IEnumerable<T> InBufferOrder<T>(IReadOnlyList<T> named, Func<T, long> dimensions) =>
        named.Where(p => dimensions(p) >= 2).Concat(named.Where(p => dimensions(p) < 2));

    /// <summary>
    /// What the optimizer reads of main gradients <paramref name="mainGrads"/>: Megatron's _copy_model_grads_to_main_grads
    /// (megatron/core/optimizer/optimizer.py and distrib_optimizer.py at d98e8a6) sets main_param.grad = main_grad.float(),
    /// the float32 gradients themselves, or a float32 copy of 16-bit ones, on which the loss scaler unscales and checks for
    /// an overflow and the norm and the update run. Dispose it (a float32 result shares the gradients' storage).
    /// </summary>
    public static Tensor Float32Grads(Tensor mainGrads) => mainGrads.to(ScalarType.Float32);

    /// <summary>Float32 master weights under bf16/fp16 compute; otherwise the compute type itself.</summary>
    public static ScalarType MasterDtypeOf(ScalarType computeDtype) =>
        computeDtype is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : computeDtype;

    /// <summary>After a micro-batch's backward: fold its bf16 gradients into the main gradients (all but the fused layers'
    /// weights, whose GEMMs accumulated there already), one rounding to the main gradients' dtype per micro-batch, as
    /// Megatron's grad hook's main_grad.add_(grad) makes it.</summary>
    public void AccumulateMicroBatch() => AccumulateRange(0, Count);

    /// <summary>Folds the bf16 gradients in [offset, offset + count) into the float32 accumulator (one bucket's, when its
    /// gradients are final), skipping the fused layers' weights: their main gradients are complete already, and adding
    /// their (zero) bf16 gradients would only cost a pass over memory.</summary>
    public void AccumulateRange(long offset, long count)
    {
        if (!MixedPrecision) return;
        using (no_grad())
        {
            foreach (var (start, length, gradStart) in Folded)
            {
                long from = Math.Max(start, offset), to = Math.Min(start + length, offset + count);
                if (to <= from) continue;
                using var grads = Grads.narrow(0, gradStart + from - start, to - from);
                using var main = MainGrads.narrow(0, from, to - from);
                main.add_(grads, One);
                grads.zero_();
            }
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
        using var scope = NewDisposeScope(); // holds both views until copy_ returns (see the constructor)
        using (no_grad()) Master.narrow(0, offset, count).copy_(Params.narrow(0, offset, count));
    }

    /// <summary>Float32 master weights apart from <see cref="Params"/> (mixed precision, not the distributed optimizer's shards).</summary>
    private bool KeepsSeparateMaster => MixedPrecision && Master.numel() == Count;

    public void Dispose()
    {
        if (!ReferenceEquals(Params, Master)) Params.Dispose();
        if (!ReferenceEquals(Grads, MainGrads)) Grads.Dispose();
        Master.Dispose();
        MainGrads.Dispose();
    }
}
