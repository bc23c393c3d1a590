using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>Adam hyper-parameters, Megatron's flag defaults (--adam-beta1 0.9, --adam-beta2 0.999, --adam-eps 1e-8, --weight-decay 0.01, --clip-grad 1.0).</summary>
public sealed record AdamWOptions(double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8, double WeightDecay = 0.01, double ClipGrad = 1.0);

/// <summary>
/// AdamW (Loshchilov and Hutter 2019: decoupled weight decay) on the flat float32 buffers of a
/// <see cref="ParamAndGradBuffer"/>, with global-norm gradient clipping (Pascanu et al. 2013). About ten kernels
/// per step whatever the number of parameters. The moments are flat too, so a checkpoint is three tensors.
/// </summary>
public sealed class AdamW : IDisposable
{
    private readonly ParamAndGradBuffer buffer;
    public AdamWOptions Options { get; }
    public Tensor ExpAvg { get; }
    public Tensor ExpAvgSq { get; }
    public long Step { get; set; }

    public AdamW(ParamAndGradBuffer buffer, AdamWOptions options)
    {
        this.buffer = buffer;
        Options = options;
        ExpAvg = zeros_like(buffer.Master);
        ExpAvgSq = zeros_like(buffer.Master);
    }

    /// <summary>
    /// Clips the accumulated gradients to the global norm limit and applies one update at the learning rate.
    /// Returns the gradient norm before clipping, as a device scalar (reading it is the caller's one sync).
    /// </summary>
    public Tensor ClipAndStep(double lr)
    {
        var o = Options;
        var g = buffer.MainGrads;
        var w = buffer.Master;
        Step++;
        using (no_grad())
        {
            var norm = g.norm();
            if (o.ClipGrad > 0)
            {
                using var coefficient = (o.ClipGrad / (norm + 1e-6)).clamp_max_(1.0);
                g.mul_(coefficient);
            }
            double bias1 = 1 - Math.Pow(o.Beta1, Step), bias2 = 1 - Math.Pow(o.Beta2, Step);
            if (o.WeightDecay > 0) w.narrow(0, 0, buffer.DecayedCount).mul_(1 - lr * o.WeightDecay);
            ExpAvg.lerp_(g, 1 - o.Beta1);
            ExpAvgSq.mul_(o.Beta2).addcmul_(g, g, 1 - o.Beta2);
            using var denominator = ExpAvgSq.sqrt().div_(Math.Sqrt(bias2)).add_(o.Epsilon);
            w.addcdiv_(ExpAvg, denominator, -lr / bias1);
            buffer.CopyMasterToParams();
            return norm;
        }
    }

    public void Dispose()
    {
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }
}
