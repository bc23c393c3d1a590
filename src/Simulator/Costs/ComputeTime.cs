using Harness.Simulator.Specs;

namespace Harness.Simulator.Costs;

/// <summary>Seconds one transformer layer computes for one micro-batch on one rank.</summary>
/// <param name="GemmForward">QKV, output projection and MLP GEMMs, forward.</param>
/// <param name="AttentionForward">Score and context matmuls (flash or cuDNN's fused attention, or unfused with its softmax).</param>
/// <param name="ElementwiseForward">Memory-bound work: norms, rotary, activation function, residual adds, kernel gaps.</param>
/// <param name="Backward">The whole backward pass (GEMM dgrad + wgrad, attention backward, element-wise).</param>
/// <param name="AttentionBackward">The attention's part of <see cref="Backward"/> (what a context-parallel ring hides behind).</param>
/// <param name="ElementwiseBackward">The memory-bound part of <see cref="Backward"/>, its kernel gaps included.</param>
/// <param name="Recompute">Forward work repeated during backward by selective or Megatron-Kwai recomputation
/// (full recomputation repeats <see cref="Forward"/> and is applied per layer group by the caller).</param>
public readonly record struct LayerComputeTime(
    double GemmForward, double AttentionForward, double ElementwiseForward, double Backward, double AttentionBackward, double Recompute,
    double ElementwiseBackward)
{
    public double Forward => GemmForward + AttentionForward + ElementwiseForward;
    /// <summary>Weight-gradient GEMMs: half of the backward GEMM work, what async TP communication hides behind.</summary>
    public double WeightGradGemm => GemmForward;
}

/// <summary>An (M x K)·(K x N) matrix product.</summary>
public readonly record struct GemmShape(double M, double K, double N)
{
    public double Flops => 2 * M * K * N;
}

/// <summary>
/// Compute time as FLOPs over (peak x efficiency) plus memory-bound bytes over (HBM bandwidth x efficiency).
/// GEMM efficiency falls when a dimension is small: each dimension d contributes d/(d + d½), d½ the GPU's
/// <see cref="EfficiencySpec.GemmHalfDim"/> (partly filled tiles and waves). Backward GEMMs are two GEMMs of the
/// forward's shape (data and weight gradients); FlashAttention's backward does 5 matmuls to the forward's 2
/// (it recomputes the scores: Dao 2023), i.e. 2.5 times the forward's FLOPs; cuDNN's fused attention runs the same algorithm.
/// </summary>
public static class ComputeTime
{
    /// <summary>Flash attention backward / forward FLOPs (Dao 2023, FlashAttention-2 section 3.1.2).</summary>
    public const double FlashBackwardRatio = 2.5;

    /// <summary>Kernels a transformer layer launches forward (norms, GEMMs, rotary, attention, activation,
    /// adds, communication); backward launches about twice as many.</summary>
    public const int KernelsPerLayerForward = 20;

    /// <summary>Seconds for an (m x k)·(k x n) GEMM: 2·m·k·n FLOPs.</summary>
    public static double Gemm(double m, double k, double n, GpuSpec gpu, Precision precision) =>
        2 * m * k * n / (gpu.PeakFlops(precision) * gpu.Efficiency.Gemm * ShapeFactor(new GemmShape(m, k, n), gpu.Efficiency));

    /// <summary>The share of the large-shape GEMM rate a GEMM of this shape reaches: d/(d + d½) per dimension.</summary>
    public static double ShapeFactor(GemmShape g, EfficiencySpec e) =>
        g.M / (g.M + e.GemmHalfDim) * (g.K / (g.K + e.GemmHalfDim)) * (g.N / (g.N + e.GemmHalfDim));

    /// <summary>GEMMs of one transformer layer's forward on one rank.</summary>
    public const int LayerGemmCount = 4;

    /// <summary>
    /// The forward GEMMs of one layer on one rank for one micro-batch, (tokens x K)·(K x N): QKV, attention output
    /// projection, MLP first and second linear. Column-parallel GEMMs split N, row-parallel GEMMs split K (Shoeybi et
    /// al. 2019). Backward runs two GEMMs of each shape (data gradient (M x N)·(N x K), weight gradient (K x M)·(M x N)).
    /// </summary>
    public static void LayerGemms(ModelSpec m, RunDescription c, Span<GemmShape> into)
    {
        double t = c.TensorParallel, T = (double)c.MicroBatch * m.SeqLength / c.ContextParallel;
        double h = m.HiddenSize, f = m.FfnHiddenSize;
        into[0] = new GemmShape(T, h, m.QkvWidth / t);
        into[1] = new GemmShape(T, h / t, h);
        into[2] = new GemmShape(T, h, (m.Activation == Activation.SwiGlu ? 2 : 1) * f / t);
        into[3] = new GemmShape(T, f / t, h);
    }

    /// <summary>
    /// Seconds per micro-batch, averaged over the m of an iteration, to add the weight gradients of
    /// <paramref name="parameters"/> parameters to the accumulated gradients when the weight-gradient GEMM does not
    /// accumulate itself (<see cref="RunDescription.GradientAccumulationFusion"/> off). PyTorch's AccumulateGrad stores the
    /// first micro-batch's gradient and, for each of the m − 1 others, reads the fresh gradient (parameter dtype) and reads
    /// and writes the accumulated one: a full pass over the rank's weights per micro-batch. Megatron fused it into the GEMM
    /// (--gradient-accumulation-fusion, late 2021) for that reason; with the many small micro-batches of a pipeline
    /// (Narayanan et al. 2021: up to 512 per iteration) it costs a few percent of the step.
    /// </summary>
    public static double GradientAccumulation(double parameters, RunDescription c, GpuSpec gpu)
    {
        int m = c.NumMicroBatches;
        if (c.GradientAccumulationFusion || parameters <= 0 || m <= 1) return 0;
        double e = Activations.BytesPerElement(c.Precision);
        double accumulated = c.GradientsInFp32 ? 4 : e;
        return MemoryBound(parameters * (e + 2 * accumulated), gpu) * (m - 1) / m;
    }

    /// <summary>Seconds to stream <paramref name="bytes"/> through HBM in element-wise kernels.</summary>
    public static double MemoryBound(double bytes, GpuSpec gpu) =>
        bytes / (gpu.HbmBandwidthBytesPerSecond * gpu.Efficiency.Hbm);

    /// <summary>
    /// Forward bytes per element of one norm. Fused (Apex/Transformer Engine kernels): read the input, write the
    /// output. Unfused (Megatron-LM's legacy RMSNorm, PyTorch ops in fp32 as of early 2024): x.float() (r 2, w 4),
    /// pow (r 4, w 4), mean (r 4), x·rsqrt (r 4, w 4), cast back (r 4, w 2), ·weight (r 2, w 2): 36 B.
    /// </summary>
    public static double NormBytesPerElement(RunDescription c, double bytesPerElement) =>
        c.FusedNorm ? 2 * bytesPerElement : 36;

    public static LayerComputeTime Layer(ModelSpec m, RunDescription c, GpuSpec gpu)
    {
        var prec = c.Precision;
        double e = Activations.BytesPerElement(prec);
        double t = c.TensorParallel, sp = c.SequenceParallel ? t : 1;
        double T = (double)c.MicroBatch * m.SeqLength / c.ContextParallel;  // tokens on this rank before SP
        double h = m.HiddenSize, f = m.FfnHiddenSize;
        double s = m.SeqLength, a = m.NumAttentionHeads;
        bool swiglu = m.Activation == Activation.SwiGlu;

        Span<GemmShape> shapes = stackalloc GemmShape[LayerGemmCount];
        LayerGemms(m, c, shapes);
        double gemm = 0;
        foreach (var g in shapes) gemm += Gemm(g.M, g.K, g.N, gpu, prec);

        // Causal attention: this rank's T queries against s keys, half the square on average (with context
        // parallelism, Megatron's load balancing gives every rank the same half). Flash and cuDNN's fused attention skip the
        // masked half, each at its own efficiency; the unfused kernels (Transformer Engine's and Megatron's local) compute the
        // whole square and run softmax and dropout over it in memory.
        var backend = AttentionKernels.Resolve(c, gpu);
        bool keepsScores = AttentionKernels.KeepsScores(backend);
        double attention, attentionBackward;
        if (!keepsScores)
        {
            double flops = 2 * T * s * h / t;
            double kernel = flops / (gpu.PeakFlops(prec) * AttentionEfficiency(backend, gpu) * KeyLengthFactor(backend, KeysPerCall(m, c), gpu.Efficiency));
            double draws = AttentionDropoutDraws(m, gpu, a / t * T * s / 2);
            attention = kernel + draws;
            attentionBackward = FlashBackwardRatio * kernel + draws;
        }
        else
        {
            double heads = a / t, hd = m.HeadDim;
            double matmuls = 2 * heads * Gemm(T, hd, s, gpu, prec);               // Q·K^T and P·V
            double scores = heads * T * s;                                          // score elements
            // Fused scale-mask-softmax (r/w) and dropout (r/w + mask); unfused (Megatron 2019): scale, masked fill
            // (+ mask read), softmax, dropout as separate kernels, each reading and writing the scores.
            double softmaxBytes = scores * (c.FusedElementwise ? (m.AttentionDropout > 0 ? 4 * e + 1 : 2 * e) : (m.AttentionDropout > 0 ? 8 * e + 2 : 6 * e + 1));
            attention = matmuls + MemoryBound(softmaxBytes, gpu);
            attentionBackward = 2 * matmuls + MemoryBound(2 * softmaxBytes, gpu);
        }

        // Element-wise bytes per token, forward and backward: the executor's own kernels one by one where they run, else
        // Megatron's passes, backward moving twice the forward's bytes.
        double norm = NormBytesPerElement(c, e);
        var (forwardBytes, backwardBytes) = HarnessKernels(c) && c.FusedNorm ? HarnessLayerBytes(m, c, e) : MegatronLayerBytes(m, c, e);
        double kernelGap = KernelsPerLayerForward * gpu.Efficiency.KernelOverheadSeconds;
        double elementwise = MemoryBound(T * forwardBytes, gpu) + kernelGap;
        double elementwiseBackward = MemoryBound(T * backwardBytes, gpu) + 2 * kernelGap;

        double backward = 2 * gemm + attentionBackward + elementwiseBackward;

        // Recomputation repeated in backward (full recomputation is handled per layer group by the caller).
        var r = c.RecomputeOrNone;
        double recompute = 0;
        if (r.Granularity == RecomputeGranularity.Selective && keepsScores)
            recompute += attention;                                                   // the core attention
        if (r.NormOutputs)
            recompute += MemoryBound(T * 2 * norm * h / sp, gpu);                     // both norms again
        if (r.MlpActivation)
            recompute += MemoryBound(T * (swiglu ? SwiGluBytes(c, e) : 2 * e) * f / t, gpu);  // the activation function
        return new LayerComputeTime(gemm, attention, elementwise, backward, attentionBackward, recompute, elementwiseBackward);
    }

    /// <summary>Bytes per token, forward and backward (twice the forward), of one layer's memory-bound passes as Megatron's
    /// kernels make them (and the executor's where its own kernels or libtorch's fused norms do not run).</summary>
    private static (double Forward, double Backward) MegatronLayerBytes(ModelSpec m, RunDescription c, double e)
    {
        double t = c.TensorParallel, sp = c.SequenceParallel ? t : 1;
        double h = m.HiddenSize, f = m.FfnHiddenSize, kv = (double)m.NumQueryGroups * m.HeadDim, norm = NormBytesPerElement(c, e);
        double forward = m.Normalization == Normalization.RmsNorm || m.HiddenDropout <= 0
            // Llama: 2 norms (fused: read h, write h), 2 residual adds (read 2h, write h), rotary on Q and K
            // (read + write), SwiGLU (SwiGluBytes).
            ? (2 * norm * h + 2 * 3 * e * h) / sp
              + ((m.PositionEmbedding == PositionEmbedding.Rotary ? RotaryBytes(c, e, h, kv) : 0)
                 + (m.Activation == Activation.SwiGlu ? SwiGluBytes(c, e) * f : 2 * e * f)) / t
            // GPT: 2 LayerNorms, 2 fused bias-dropout-adds (read 2h, write h and a 1-byte mask), fused bias-GeLU.
            : c.FusedElementwise
                ? (2 * norm * h + (2 * 3 * e + 2) * h) / sp + 2 * e * f / t
                // Unfused (Megatron 2019): bias add, dropout (+ mask), residual add as three kernels; GeLU's tanh
                // formula as eight element-wise kernels after the bias add, each reading and writing f.
                : (2 * norm * h + 2 * (7 * e + 1) * h) / sp + 9 * 2 * e * f / t;
        return (forward, 2 * forward);
    }

    /// <summary>
    /// Bytes per token, forward and backward, that one layer's memory-bound kernels move where this project's executor runs its
    /// own kernels and libtorch's fused norms, counted kernel by kernel from what each reads and writes (src/Executor/Fused:
    /// add_norm.cuh, kernels.cu; the layers in src/Executor/Transformer); the float32 row statistics of the norms (4 or 8 B a
    /// token) are left out.
    /// - A residual add fused with its norm (<see cref="FusesResidualNorms"/>): forward reads x and r and writes the sum and
    ///   the output (4 elements of h); backward one kernel reads the output's gradient, the sum and the residual's gradient and
    ///   writes the sum's (4), and one reads the output's gradient and the sum for the weight's partial sums (2). Every layer's
    ///   MLP norm fuses; its input norm where the residual arrives unsummed (<see cref="FusedInputAddShare"/>). Elsewhere, and
    ///   for every norm where they do not fuse (the GPT path without its kernels, --kaimm-recompute-norm), libtorch's add
    ///   makes the sum (3 forward; backward the residual branch's two gradients are summed, 3) and libtorch's norm runs
    ///   (forward 2, backward its input gradient 3 and its weight gradient 2), with hidden dropout a mask kernel on the delta (2
    ///   elements and a byte each way); the fused kernel draws the dropout itself, and its backward writes the delta's
    ///   gradient apart from the sum's (1 more).
    /// - Llama: the QKV split with rotary (<see cref="RotaryBytes"/>, as many bytes backward, which writes the projection's
    ///   gradient from attention's); SwiGLU fused, forward reading gate and up and writing the product (3 of f), backward
    ///   reading the product's gradient, gate and up and writing theirs (5); libtorch's SwiGLU, 5 forward and twice that back.
    /// - GPT: GeLU's tanh form (libtorch's, one kernel each way: 2 of f forward, 3 backward); each linear's bias, which the
    ///   GEMM adds (Fused.LinearWithGradAccumulation included) except on parallel ranks' row-parallel linears, which add it
    ///   after their reduction (2 of h: src/Executor/TensorParallel/ParallelLinears.cs), and whose gradient a reduction over
    ///   the tokens reads backward (1 of each output);
    ///   without rotary, Q's, K's and V's gradients concatenated into the projection's (2 of the QKV width).
    /// </summary>
    private static (double Forward, double Backward) HarnessLayerBytes(ModelSpec m, RunDescription c, double e)
    {
        double t = c.TensorParallel, sp = c.SequenceParallel ? t : 1;
        double h = m.HiddenSize, f = m.FfnHiddenSize, kv = (double)m.NumQueryGroups * m.HeadDim;
        // Norms whose add fuses: the MLP's (mlp) and the input's share (input); the others take libtorch's add and norm.
        double mlp = FusesResidualNorms(m, c) ? 1 : 0, input = mlp * FusedInputAddShare(m, c), summed = 2 - mlp - input;
        // Hidden dropout: libtorch's mask kernel on a delta it adds (2 elements and a byte each way); the fused add-norm draws
        // inside and keeps no mask, but its backward writes the delta's gradient apart from the sum's (1 more).
        double drop = m.HiddenDropout > 0 ? 2 * e + 1 : 0, fusedDrop = m.HiddenDropout > 0 ? e : 0;
        double forward = ((mlp + input) * 4 * e + summed * (3 * e + 2 * e + drop)) * h / sp;
        double backward = ((mlp + input) * (6 * e + fusedDrop) + summed * (3 * e + 5 * e + drop)) * h / sp;
        if (m.Activation == Activation.SwiGlu)
        {
            forward += SwiGluBytes(c, e) * f / t;
            backward += (c.FusedSwiGlu ? 5 * e : 2 * SwiGluBytes(c, e)) * f / t;
        }
        else
        {
            forward += 2 * e * f / t;
            backward += 3 * e * f / t;
        }
        if (m.PositionEmbedding == PositionEmbedding.Rotary)
        {
            forward += RotaryBytes(c, e, h, kv) / t;
            backward += RotaryBytes(c, e, h, kv) / t;
        }
        else backward += 2 * e * m.QkvWidth / t;
        if (m.Normalization == Normalization.LayerNorm) // GPT's linears carry biases (ModelSpec.ParametersPerLayer)
        {
            // Outputs of QKV and FC1 (column-parallel, whose GEMMs add the bias) and of the projection and FC2 (row-parallel:
            // on parallel ranks the bias is added after their reduction, in a run of one rank by the GEMM).
            double outputs = (m.QkvWidth + f) / t + 2 * h / sp;
            if (c.WorldSize > 1) forward += 2 * e * 2 * h / sp;
            backward += e * outputs;
        }
        return (forward, backward);
    }

    /// <summary>The keys per query row at which the presets' cuDNN fused-attention constants were measured (Shah et al. 2024 at
    /// s 4k-16k, `harness calibrate` on an H200 at 4k-8k).</summary>
    public const double AttentionReferenceKeys = 8192;

    /// <summary>cuDNN's fused attention's rate at <paramref name="keys"/> keys per query row relative to its rate at
    /// <see cref="AttentionReferenceKeys"/>: k/(k + k½) over the same at the reference, k½ the GPU's
    /// <see cref="EfficiencySpec.AttentionHalfKeys"/> (1 where it is 0). FlashAttention-2's constant stays one number: its
    /// dependence on length was not timed here.</summary>
    public static double KeyLengthFactor(AttentionBackend backend, double keys, EfficiencySpec e) =>
        backend != AttentionBackend.Fused || e.AttentionHalfKeys <= 0 ? 1
        : keys / (keys + e.AttentionHalfKeys) / (AttentionReferenceKeys / (AttentionReferenceKeys + e.AttentionHalfKeys));

    /// <summary>The keys one attention call runs each query row over: the sequence, or under a context-parallel ring the
    /// 1/R of it each ring step brings (Transformer Engine's AttnFuncWithCPAndKVP2P calls the kernel once per step; the
    /// all-gather and the all-to-all give each call the whole sequence).</summary>
    public static double KeysPerCall(ModelSpec m, RunDescription c) =>
        c.ContextParallelComm == ContextParallelCommType.AllGather ? m.SeqLength : (double)m.SeqLength / c.ContextParallelLevels.Ring;

    /// <summary>Seconds a flash-style kernel spends drawing attention dropout over <paramref name="probabilities"/> elements
    /// (the causal half of the score matrix), once forward; backward regenerates the same mask from the saved Philox seed and
    /// offset rather than storing it (Dao et al. 2022, FlashAttention, section 3.1 and algorithm 2), so it pays as much again.
    /// The rate is the GPU's <see cref="EfficiencySpec.DropoutDrawsPerSecond"/>; no dropout, or no rate, costs nothing.</summary>
    public static double AttentionDropoutDraws(ModelSpec m, GpuSpec gpu, double probabilities) =>
        m.AttentionDropout > 0 && gpu.Efficiency.DropoutDrawsPerSecond is double rate ? probabilities / rate : 0;

    /// <summary>The efficiency of a flash-style kernel: cuDNN's fused attention's own, else FlashAttention-2's. A GPU without
    /// cuDNN's fused attention is refused before costing (<see cref="AttentionKernels.Unavailable"/>).</summary>
    private static double AttentionEfficiency(AttentionBackend backend, GpuSpec gpu) => backend == AttentionBackend.Fused
        ? gpu.Efficiency.FusedAttention ?? throw new InvalidOperationException($"the {gpu.Name} has no cuDNN fused attention to cost.")
        : gpu.Efficiency.Attention;

    /// <summary>Bytes SwiGLU moves per FFN channel and token, forward: fused, one kernel reads gate and up and writes the
    /// product (3 elements); unfused, SiLU reads and writes f, the product reads 2f and writes f (5).</summary>
    private static double SwiGluBytes(RunDescription c, double e) => (c.FusedSwiGlu ? 3 : 5) * e;

    /// <summary>Whether the executor's own fused kernels are what runs (<see cref="TransformerImpl.Harness"/> with its kernels
    /// on; they take bf16 tensors only, else libtorch's operators run, whose passes are Megatron's here).</summary>
    private static bool HarnessKernels(RunDescription c) =>
        c.Implementation == TransformerImpl.Harness && c.FusedKernels && c.Precision == Precision.Bf16;

    /// <summary>Whether the executor's GPT path's kernels run (<see cref="RunDescription.FusedGptKernels"/>, a module beside the
    /// others, which they need).</summary>
    private static bool HarnessGptKernels(RunDescription c) => HarnessKernels(c) && c.FusedGptKernels;

    /// <summary>Whether the executor fuses residual adds with the norms after them (src/Executor/Fused/add_norm.cuh: the fused
    /// kernel reads x and r and writes the sum and the output, so the sum is not read back; <see cref="HarnessLayerBytes"/>):
    /// its kernels for the model's norm (LayerNorm's in the GPT path's kernels, RMSNorm's in the Llama path's), libtorch's
    /// fused norm, and no --kaimm-recompute-norm, whose norms run inside the linears after them.</summary>
    public static bool FusesResidualNorms(ModelSpec m, RunDescription c) =>
        (m.Normalization == Normalization.LayerNorm ? HarnessGptKernels(c) : HarnessKernels(c)) && c.FusedNorm && !c.RecomputeOrNone.NormOutputs;

    /// <summary>
    /// How many of a layer's two hidden dropouts (after attention, after the MLP) the executor applies inside its residual add +
    /// norm (Megatron's bias-dropout-add fused with the next norm; src/Executor/Fused/add_norm.cuh): the attention's always
    /// where the adds fuse (<see cref="FusesResidualNorms"/>), the MLP's where the next layer's input add fuses
    /// (<see cref="FusedInputAddShare"/>). Those draw their masks from a counter-based generator in forward and again in
    /// backward: no mask is written or kept.
    /// </summary>
    public static double FusedDropoutAdds(ModelSpec m, RunDescription c) =>
        m.HiddenDropout > 0 && FusesResidualNorms(m, c) ? 1 + FusedInputAddShare(m, c) : 0;

    /// <summary>
    /// The share of a model chunk's layers whose input add the executor fuses with their input norm (GptModel.Decode): the
    /// residual passes unsummed from layer to layer, except into a chunk's first layer (the previous stage's or the
    /// embedding's output is one tensor) and into a group that full recomputation checkpoints, whose input is one tensor,
    /// as is its output (RecomputeGroups: --recompute-method uniform, groups of --recompute-num-layers; block, the first n
    /// layers alone, so layers 0..n take a sum). A chunk holds --num-layers-per-virtual-pipeline-stage layers, else L / p
    /// (uneven first and last stages taken as even here). The last layer's add into the final norm, once per model, is left
    /// out.
    /// </summary>
    public static double FusedInputAddShare(ModelSpec m, RunDescription c)
    {
        double chunk = c.LayersPerVirtualStage ?? Math.Max(1.0, (double)m.NumLayers / c.PipelineParallel);
        var r = c.RecomputeOrNone;
        int n = Math.Max(1, r.NumLayers);
        double unfused = r.Granularity != RecomputeGranularity.Full ? 1
            : r.Method == RecomputeMethod.Uniform ? Math.Ceiling(chunk / n)
            : Math.Min(chunk, n + 1);
        return Math.Max(0, chunk - unfused) / chunk;
    }

    /// <summary>Bytes per token the rotary positions move, forward. Transformer Engine's fused rotary kernel reads and writes
    /// Q and K (h + kv channels). The executor's fused kernel splits the QKV projection's output into Q, K and V and rotates Q and
    /// K in the same pass: it reads and writes all h + 2·kv channels, and no separate split copy is made. It does not run under
    /// context parallelism (a rank's token positions are not 0..s-1), where libtorch's operators rotate Q and K.</summary>
    private static double RotaryBytes(RunDescription c, double e, double h, double kv) =>
        HarnessKernels(c) && c.ContextParallel == 1 ? 2 * e * (h + 2 * kv) : 2 * e * (h + kv);

    /// <summary>Whether the executor's fused cross-entropy runs: its kernels in bf16 over an unsplit vocabulary. It saves the bf16
    /// logits and a float per token for backward, where Megatron's saves an fp32 softmax.</summary>
    public static bool FusedCrossEntropy(RunDescription c) => HarnessKernels(c) && c.TensorParallel == 1;

    /// <summary>Output layer and loss for one micro-batch on the last stage: the final norm where the executor's kernels run
    /// it (<see cref="FinalNorm"/>), the logits GEMM (vocabulary split t ways), and the cross-entropy. Megatron's vocabulary-parallel cross-entropy runs in fp32 (cast, max, exp, sum, divide:
    /// ~5 passes of 4 B over the logits forward, 3 backward). The executor's fused cross-entropy (an unsplit vocabulary only)
    /// reads the bf16 logits once forward (an online log-sum-exp: Milakov and Gimelshein 2018, arXiv 1805.02867) and once
    /// backward, writing the bf16 logits' gradient: 2 B and 4 B per logit. Returns (forward, backward) seconds.</summary>
    public static (double Forward, double Backward) OutputLayer(ModelSpec m, RunDescription c, GpuSpec gpu)
    {
        double T = (double)c.MicroBatch * m.SeqLength / c.ContextParallel;
        double logits = T * m.VocabSize / c.TensorParallel;
        double gemm = Gemm(T, m.HiddenSize, (double)m.VocabSize / c.TensorParallel, gpu, c.Precision);
        bool fused = FusedCrossEntropy(c);
        double loss = MemoryBound(logits * (fused ? 2 : 5 * 4), gpu);
        var (norm, normBackward) = FinalNorm(m, c, gpu);
        return (gemm + loss + norm, 2 * gemm + MemoryBound(logits * (fused ? 2 * 2 : 3 * 4), gpu) + normBackward);
    }

    /// <summary>The final norm with the last layer's residual add, where the executor's layers are counted kernel by kernel
    /// (<see cref="HarnessLayerBytes"/>). Where the residual reaches it unsummed and the adds fuse (<see cref="FusesResidualNorms"/>),
    /// forward the kernel reads x and r and writes the sum and the output (4 elements of h), backward TorchSharp fills the
    /// gradient of the sum nothing reads with zeros (1) and the add-norm's two backward kernels move 6 (with hidden dropout
    /// the delta's gradient apart, 1 more). Else libtorch's add makes the sum (3, and a mask kernel on the delta with
    /// dropout: 2 elements and a byte each way), also where uniform full recomputation's last group hands over its sum, and
    /// libtorch's norm runs (2 forward, 3 + 2 backward); the sum feeds the norm alone, so no gradients are summed. Elsewhere,
    /// as in Megatron's count, it is not charged.</summary>
    private static (double Forward, double Backward) FinalNorm(ModelSpec m, RunDescription c, GpuSpec gpu)
    {
        if (!HarnessKernels(c) || !c.FusedNorm) return (0, 0);
        double elements = (double)c.MicroBatch * m.SeqLength / c.ContextParallel * m.HiddenSize / (c.SequenceParallel ? c.TensorParallel : 1);
        double e = Activations.BytesPerElement(c.Precision);
        var r = c.RecomputeOrNone;
        bool dropout = m.HiddenDropout > 0;
        if (FusesResidualNorms(m, c) && !(r.Granularity == RecomputeGranularity.Full && r.Method == RecomputeMethod.Uniform))
            return (MemoryBound(elements * 4 * e, gpu), MemoryBound(elements * (7 + (dropout ? 1 : 0)) * e, gpu));
        double drop = dropout ? 2 * e + 1 : 0;
        return (MemoryBound(elements * (5 * e + drop), gpu), MemoryBound(elements * (5 * e + drop), gpu));
    }

    /// <summary>
    /// Embedding lookup for one micro-batch on the first stage: write T x h, and backward scatters the same (2 elements per
    /// channel and token). The executor's learned positions (--transformer-impl harness) add what its kernels move besides:
    /// its fused kernel (<see cref="RunDescription.FusedGptKernels"/>) reads the word row and the position row it writes the
    /// sum of (2 more); libtorch's gather reads the word row and its add reads the gathered row and the position row and writes
    /// the sum again (4 more). Under tensor parallelism the positions are added after the all-reduce by libtorch's add (3),
    /// the kernel gathering the rank's rows with the other ranks' ids as zero rows (reading 1), where libtorch's gather
    /// (1) is followed by a masked fill of those rows (reading and writing 2).
    /// </summary>
    public static double Embedding(ModelSpec m, RunDescription c, GpuSpec gpu)
    {
        double elements = 2;
        if (c.Implementation == TransformerImpl.Harness && m.PositionEmbedding == PositionEmbedding.Learned)
            elements += (HarnessGptKernels(c), c.TensorParallel > 1) switch
            {
                (true, false) => 2,
                (false, false) => 4,
                (true, true) => 1 + 3,
                (false, true) => 1 + 2 + 3,
            };
        return MemoryBound((double)c.MicroBatch * m.SeqLength / c.ContextParallel * m.HiddenSize
                           * Activations.BytesPerElement(c.Precision) * elements, gpu);
    }
}
