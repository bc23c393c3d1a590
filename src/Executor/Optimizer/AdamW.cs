using Harness.Executor.Fused;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// AdamW (Loshchilov and Hutter 2019: decoupled weight decay) on the flat float32 buffers of a
/// <see cref="ParamAndGradBuffer"/>, with global-norm gradient clipping (Pascanu et al. 2013). About ten kernels
/// per step whatever the number of parameters, or one (<see cref="FusedKernels.AdamW"/>, which also writes the bf16
/// weights) when fused kernels are on and the buffers live on a GPU. The moments are flat too, so a checkpoint is
/// three tensors.
/// </summary>
public sealed class AdamW : IOptimizerState, IDisposable
{
    private readonly ParamAndGradBuffer buffer;
    private readonly bool fused;
    public AdamSettings Options { get; }
    public Tensor ExpAvg { get; }
    public Tensor ExpAvgSq { get; }
    public long Step { get; set; }
    public IReadOnlyList<(long Offset, long Length)> Segments => [(0, buffer.Count)];
    public Tensor Master => buffer.Master;

    /// <param name="fused">One fused kernel per step (the caller checked that the kernels run on this device).</param>
    public AdamW(ParamAndGradBuffer buffer, AdamSettings options, bool fused = false)
    {
        this.buffer = buffer;
        this.fused = fused && Fusable(buffer.Master);
        Options = options;
        ExpAvg = zeros_like(buffer.Master);
        ExpAvgSq = zeros_like(buffer.Master);
    }

    /// <summary>
    /// Clips the accumulated gradients to the global norm limit and applies one update at the learning rate.
    /// Returns the gradient norm before clipping, as a device scalar (reading it is the caller's one sync).
    /// <paramref name="gradNorm"/> computes the norm when it spans several ranks (model parallelism).
    /// </summary>
    public Tensor ClipAndStep(double lr, Func<Tensor, Tensor>? gradNorm = null)
    {
        var g = buffer.MainGrads;
        Step++;
        using (no_grad())
        {
            var norm = gradNorm?.Invoke(g) ?? g.norm();
            ClipAndUpdate(buffer.Master, g, ExpAvg, ExpAvgSq, fused && buffer.MixedPrecision ? buffer.Params : null, buffer.DecayedCount,
                norm, Options, lr, Step, fused);
            if (!fused) buffer.CopyMasterToParams();
            return norm;
        }
    }

    /// <summary>
    /// Clips and updates flat float32 weights <paramref name="w"/> (a whole buffer, or a shard of one: the step is
    /// elementwise), by the fused kernel, which reads the gradients without scaling them and, given
    /// <paramref name="param"/>, also writes the bf16 weights there; else by libtorch's operators (gradients clipped in
    /// place). <paramref name="fused"/> only where the kernels run: float32 tensors on a GPU.
    /// </summary>
    internal static void ClipAndUpdate(Tensor w, Tensor g, Tensor m, Tensor v, Tensor? param, long decayedCount, Tensor norm, AdamSettings o,
        double lr, long step, bool fused)
    {
        if (fused)
        {
            using var norm32 = norm.to(ScalarType.Float32);
            FusedKernels.AdamW(w, g, m, v, param, decayedCount, norm32, Scalars(o, lr, step));
            return;
        }
        Clip(g, norm, o);
        Update(w, g, m, v, decayedCount, o, lr, step);
    }

    /// <summary>Whether the fused kernel can update <paramref name="master"/>: float32 on a GPU (the caller checked that the kernels load).</summary>
    internal static bool Fusable(Tensor master) => master.is_cuda && master.dtype == ScalarType.Float32;

    /// <summary>The fused kernel's scalars: the same double-precision values the reference path hands libtorch.</summary>
    internal static FusedKernels.AdamWScalars Scalars(AdamSettings o, double lr, long step)
    {
        double bias1 = 1 - Math.Pow(o.Beta1, step), bias2 = 1 - Math.Pow(o.Beta2, step);
        return new((float)o.ClipGrad, (float)(o.WeightDecay > 0 ? 1 - lr * o.WeightDecay : 1), (float)(1 - o.Beta1), (float)o.Beta2,
            (float)(1 - o.Beta2), (float)(1 / Math.Sqrt(bias2)), (float)o.Epsilon, (float)(-lr / bias1));
    }

    /// <summary>Scales <paramref name="grads"/> so that their global norm is at most the clipping limit.</summary>
    public static void Clip(Tensor grads, Tensor norm, AdamSettings o)
    {
        if (o.ClipGrad <= 0) return;
        using var coefficient = (o.ClipGrad / (norm + 1e-6)).clamp_max_(1.0);
        grads.mul_(coefficient);
    }

    /// <summary>
    /// One AdamW update of flat weights <paramref name="w"/> with gradients <paramref name="g"/> and moments
    /// <paramref name="m"/>, <paramref name="v"/> (step counted from 1); weight decay on the first
    /// <paramref name="decayedCount"/> elements. Elementwise, so a shard of the buffers updates like the whole.
    /// </summary>
    public static void Update(Tensor w, Tensor g, Tensor m, Tensor v, long decayedCount, AdamSettings o, double lr, long step)
    {
        double bias1 = 1 - Math.Pow(o.Beta1, step), bias2 = 1 - Math.Pow(o.Beta2, step);
        if (o.WeightDecay > 0 && decayedCount > 0) w.narrow(0, 0, decayedCount).mul_(1 - lr * o.WeightDecay);
        m.lerp_(g, 1 - o.Beta1);
        v.mul_(o.Beta2).addcmul_(g, g, 1 - o.Beta2);
        using var denominator = v.sqrt().div_(Math.Sqrt(bias2)).add_(o.Epsilon);
        w.addcdiv_(m, denominator, -lr / bias1);
    }

    public void CopyMasterToParams() => buffer.CopyMasterToParams();

    public void Dispose()
    {
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }
}
