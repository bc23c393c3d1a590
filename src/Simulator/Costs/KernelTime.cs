using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>
/// The GPU kernel time of one training iteration on one GPU, by the kind of kernel, as the simulator costs it: what a
/// kernel profile of the same run (every kernel timed, one after another) sets beside it. The launch gaps the simulator adds
/// per kernel (<see cref="EfficiencySpec.KernelOverheadSeconds"/>) lie between kernels and are left out.
/// </summary>
/// <param name="Gemm">The layers' GEMMs (forward, data and weight gradient, and those full recomputation repeats) and the
/// output layer's (the logits).</param>
/// <param name="Attention">Core attention, forward and backward (flash or cuDNN's fused kernels; the unfused backends'
/// matmuls and softmax), and what selective recomputation repeats of it.</param>
/// <param name="Elementwise">The memory-bound kernels around them: norms, residual adds, rotary, the activation function,
/// dropout, the embedding, the loss, gradient accumulation, and what Megatron-Kwai's recomputation repeats.</param>
/// <param name="Optimizer">The optimizer step over the GPU's parameters.</param>
public readonly record struct KernelTime(double Gemm, double Attention, double Elementwise, double Optimizer)
{
    public double Total => Gemm + Attention + Elementwise + Optimizer;

    /// <summary>One iteration of <paramref name="m"/> under <paramref name="c"/>, which runs on one GPU (world size 1: every
    /// layer, every micro-batch and the whole optimizer on it).</summary>
    public static KernelTime Iteration(ModelSpec m, RunDescription c, GpuSpec gpu)
    {
        if (c.WorldSize != 1) throw new ArgumentException($"a kernel profile is one GPU's: the description runs on {c.WorldSize}.", nameof(c));
        if (c.AttentionBackend == AttentionBackend.Auto) c = c with { AttentionBackend = AttentionKernels.Resolve(c, gpu) };
        var layer = ComputeTime.Layer(m, c, gpu);
        double gap = ComputeTime.KernelsPerLayerForward * gpu.Efficiency.KernelOverheadSeconds;
        double elementwise = layer.ElementwiseForward - gap, elementwiseBackward = layer.ElementwiseBackward - 2 * gap;
        int layers = m.NumLayers, recomputed = Flops.RecomputedLayers(c, layers);
        // Selective recomputation repeats the unfused core attention; Megatron-Kwai's, the norms and the activation function.
        double attentionRecompute = c.RecomputeOrNone.Granularity == RecomputeGranularity.Selective && AttentionKernels.KeepsScores(c.AttentionBackend)
            ? layer.AttentionForward : 0;
        // The backward runs two GEMMs of each forward shape, the attention's backward and its own memory-bound kernels (ComputeTime.Layer).
        double T = (double)c.MicroBatch * m.SeqLength;
        double logits = ComputeTime.Gemm(T, m.HiddenSize, m.VocabSize, gpu, c.Precision);
        var (outputForward, outputBackward) = ComputeTime.OutputLayer(m, c, gpu);
        double parameters = ModelState.RankParameters(m, c, 0);
        double perMicroBatch = layers * 3 * layer.GemmForward + recomputed * layer.GemmForward + 3 * logits;
        double attention = layers * (layer.AttentionForward + layer.AttentionBackward + attentionRecompute) + recomputed * layer.AttentionForward;
        double memoryBound = layers * (elementwise + elementwiseBackward + layer.Recompute - attentionRecompute) + recomputed * elementwise
                             + outputForward + outputBackward - 3 * logits + 2 * ComputeTime.Embedding(m, c, gpu)
                             + ComputeTime.GradientAccumulation(parameters, c, gpu);
        int microBatches = c.NumMicroBatches;
        return new KernelTime(microBatches * perMicroBatch, microBatches * attention, microBatches * memoryBound,
            OptimizerTime.Step(parameters, c, gpu));
    }
}
