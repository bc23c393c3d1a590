namespace Harness.Executor.Fused;

/// <summary>
/// A dropout drawn and not yet applied (Megatron's bias-dropout-add, whose dropout the executor applies where the sum is
/// made): its probability and the seed of its draw. The fused residual add + norm drops with Philox keyed by the seed
/// (<see cref="Philox"/>) and regenerates the mask in backward; libtorch's dropout elsewhere draws from a generator seeded
/// with it. Both keep each element with probability 1 − p, their masks differ.
/// </summary>
public readonly record struct DropoutDraw(double P, long Seed)
{
    /// <summary>p as the kernel compares it.</summary>
    public float KernelP => (float)P;

    /// <summary>1/(1 − p), the kept elements' scale, in float32 (libtorch's dropout computes it in double and scales in
    /// float32 alike).</summary>
    public float Scale => (float)(1.0 / (1.0 - P));
}
