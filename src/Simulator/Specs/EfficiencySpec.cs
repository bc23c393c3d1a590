namespace Harness.Simulator.Specs;

/// <summary>
/// How close a GPU's kernels get to its datasheet numbers in a training step. These are the only fitted
/// constants of the compute model; each is a physical fraction in (0, 1] and comes with its source in
/// <see cref="GpuPresets"/>. A measured profile may replace them.
/// </summary>
/// <param name="Gemm">Sustained fraction of dense peak that large bf16 GEMMs reach inside a training step
/// (not an isolated matmul: clocks under sustained power load, the other kernels around it).</param>
/// <param name="Attention">Fraction of dense peak that FlashAttention-2's kernels (--attention-backend flash) reach, forward
/// and backward averaged, counting only the causal half of the score matrix.</param>
/// <param name="Hbm">Fraction of peak HBM bandwidth that memory-bound element-wise kernels (norms, activation
/// functions, residual adds, rotary, optimizer) reach.</param>
/// <param name="GemmHalfDim">The matrix dimension at which a GEMM reaches half its large-shape efficiency:
/// tiles are partly empty and the GPU partly idle when a dimension is small (about one CTA tile).</param>
/// <param name="KernelOverheadSeconds">Launch and synchronization gap per kernel, which small micro-batches
/// cannot hide (CUDA launch latency is 3-5 µs; a transformer layer runs ~30 kernels forward).</param>
/// <param name="FusedAttention">The same for cuDNN's fused attention (--attention-backend fused); null where the GPU has none
/// (cuDNN's fused attention needs compute capability 8.0: Transformer Engine's get_attention_backend). The unfused backends
/// have no constant of their own: their matmuls run at the GEMM rate, their softmax at the HBM rate.</param>
/// <param name="DropoutDrawsPerSecond">Attention-probability elements per second a flash-style kernel (FlashAttention-2, cuDNN's
/// fused attention) draws dropout masks for: it generates each kept element's Philox random number on the SMs' integer pipes
/// inside the kernel, in forward and again in backward, work that does not shrink with the head dimension as the matmuls do;
/// null where no measurement exists (the draws are then not charged).</param>
/// <param name="AttentionHalfKeys">The keys per query row at which cuDNN's fused attention reaches half its long-sequence rate:
/// each query tile pays fixed work (loading it, the softmax epilogue, writing the output and its log-sum-exp; in backward the
/// separate dO·O, dQ-conversion and head-reduction kernels) that only a long row of keys amortizes. <see cref="FusedAttention"/>
/// is stated at <c>ComputeTime.AttentionReferenceKeys</c> keys; 0 where the GPU's kernel
/// were not timed at several lengths (no dependence is then charged).</param>
public sealed record EfficiencySpec(
    double Gemm,
    double Attention,
    double Hbm,
    double GemmHalfDim = 128,
    double KernelOverheadSeconds = 4e-6,
    double? FusedAttention = null,
    double? DropoutDrawsPerSecond = null,
    double AttentionHalfKeys = 0);
