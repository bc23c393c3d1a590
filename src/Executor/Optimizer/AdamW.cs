using TorchSharp;
using Harness.Executor.Fused;
using Harness.Simulator.Specs;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Optimizer;

/// <summary>
/// AdamW (Loshchilov and Hutter 2019: decoupled weight decay), Megatron's --optimizer adam: about ten of libtorch's kernels
/// per step whatever the number of parameters, or one (<see cref="FusedKernels.AdamW"/>, which also writes the bf16
/// weights) when fused kernels are on and the master weights are float32 on a GPU.
/// </summary>
public sealed class AdamW(AdamSettings options, bool fused = false) : IUpdateRule
{
    /// <summary>torch.optim.AdamW's state names: the first and second moment.</summary>
    public static IReadOnlyList<string> StateNames { get; } = ["exp_avg", "exp_avg_sq"];

    public AdamSettings Options => options;
    public IReadOnlyList<string> States => StateNames;
    public string Flags => "--optimizer adam";

    /// <param name="master">The caller checked that the kernels load on this device.</param>
    public bool Fuses(Tensor master) => fused && Fusable(master);

    /// <summary>By the fused kernel, which reads the gradients without scaling them; else by libtorch's operators (gradients
    /// clipped in place).</summary>
    public void ClipAndUpdate(Tensor w, Tensor g, IReadOnlyList<Tensor> states, Tensor? param, long decayedCount, Tensor norm, double lr, long step)
    {
        if (Fuses(w))
        {
            using var norm32 = norm.to(ScalarType.Float32);
            FusedKernels.AdamW(w, g, states[0], states[1], param, decayedCount, norm32, Scalars(options, lr, step));
            return;
        }
        GradientClip.Clip(g, norm, options.ClipGrad);
        Update(w, g, states[0], states[1], decayedCount, options, lr, step);
    }

    /// <summary>Whether the fused kernel can update <paramref name="master"/>: float32 on a GPU.</summary>
    internal static bool Fusable(Tensor master) => master.is_cuda && master.dtype == ScalarType.Float32;

    /// <summary>The fused kernel's scalars: the same double-precision values the reference path hands libtorch.</summary>
    internal static FusedKernels.AdamWScalars Scalars(AdamSettings o, double lr, long step)
    {
        double bias1 = 1 - Math.Pow(o.Beta1, step), bias2 = 1 - Math.Pow(o.Beta2, step);
        return new((float)o.ClipGrad, (float)(o.WeightDecay > 0 ? 1 - lr * o.WeightDecay : 1), (float)(1 - o.Beta1), (float)o.Beta2,
            (float)(1 - o.Beta2), (float)(1 / Math.Sqrt(bias2)), (float)o.Epsilon, (float)(-lr / bias1));
    }

    /// <summary>
    /// One AdamW update of flat weights <paramref name="w"/> with gradients <paramref name="g"/> and moments
    /// <paramref name="m"/>, <paramref name="v"/> (step counted from 1); weight decay on the first
    /// <paramref name="decayedCount"/> elements.
    /// </summary>
    public static void Update(Tensor w, Tensor g, Tensor m, Tensor v, long decayedCount, AdamSettings o, double lr, long step)
    {
        // 16-bit gradients (the precision-aware optimizer's main gradients) are read as float32, as FusedAdam's kernel loads them.
        using var g32 = g.dtype == m.dtype ? null : g.to(m.dtype);
        g = g32 ?? g;
        double bias1 = 1 - Math.Pow(o.Beta1, step), bias2 = 1 - Math.Pow(o.Beta2, step);
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar decay = (1 - lr * o.WeightDecay).ToScalar(), beta2 = o.Beta2.ToScalar(),
            oneMinusBeta2 = (1 - o.Beta2).ToScalar(), correction2 = Math.Sqrt(bias2).ToScalar(), epsilon = o.Epsilon.ToScalar(),
            step1 = (-lr / bias1).ToScalar();
        if (o.WeightDecay > 0 && decayedCount > 0)
        {
            using var decayed = w.narrow(0, 0, decayedCount);
            decayed.mul_(decay);
        }
        using (var weight = tensor(1 - o.Beta1)) m.lerp_(g, weight);
        v.mul_(beta2).addcmul_(g, g, oneMinusBeta2);
        using var denominator = v.sqrt();
        denominator.div_(correction2).add_(epsilon, One);
        w.addcdiv_(m, denominator, step1);
    }
}
