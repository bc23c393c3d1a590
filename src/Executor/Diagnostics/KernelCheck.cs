using Harness.Executor.Autograd;
using System.Diagnostics;
using Harness.Executor.Optimizer;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Transformer;
using TorchSharp;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Diagnostics;

/// <summary>One comparison of a fused kernel with libtorch's operators: the largest error against the tolerance.</summary>
public sealed record KernelComparison(string Name, double MaxError, double Tolerance)
{
    public bool Passed => MaxError <= Tolerance;
}

/// <summary>Fused and libtorch time of the same work, side by side (medians of repeated runs).</summary>
public sealed record KernelTiming(string Name, double FusedMs, double LibtorchMs)
{
    public double Speedup => LibtorchMs / FusedMs;
}

/// <summary>
/// Checks every fused kernel on a GPU against libtorch's operators computing the same function in float32 (both
/// vector widths: a shape whose rows are 16-byte multiples and one whose rows are not; and a tensor-parallel rank's shard
/// shapes at t = 8), and times both at caat-1b's
/// shapes (micro-batch 8, s 2048: 16384 tokens, ffn 5632, vocabulary 32000). The GPT path's kernels (<see cref="GptKernels"/>,
/// a module of their own: <see cref="CompareGpt"/>, <see cref="TimeGpt"/>) at gpt2-large's shapes (h 1280, micro-batch 32,
/// s 1024, its vocabulary padded to 50304) and at a tensor-parallel rank's at t = 2 (sequence parallelism's half of the rows,
/// half of the vocabulary).
/// Tolerances: outputs are rounded to bf16 (relative step 2^-8), so an error up to one bf16 step of the value passes.
/// </summary>
public static class KernelCheck
{
    private const double Bf16Step = 1.0 / 256;

    public static IEnumerable<KernelComparison> Compare(Device device)
    {
        foreach (var (rows, f) in new[] { (1024L, 704L), (77L, 45L) })
            foreach (var c in SwiGlu(device, rows, f)) yield return c;
        foreach (var (rows, vocab) in new[] { (512L, 32000L), (67L, 50257L) })
            foreach (var c in CrossEntropy(device, rows, vocab)) yield return c;
        foreach (var c in AdamWStep(device, 1_000_003)) yield return c;
        // Head dim 64: 16-byte accesses; 20: halves of 10 channels, one element at a time.
        foreach (var headDim in new long[] { 64, 20 })
            foreach (var c in QkvRotary(device, batch: 2, seq: 96, groups: 2, headsPerGroup: 4, headDim)) yield return c;
        yield return WeightGradientAccumulation(device, 4096, 704, 2048);
        // The residual add + RMSNorm at caat-1b's 8 x 2048 rows of h 2048, a TP-8 rank's eighth of the rows under sequence
        // parallelism, Llama-7B's h 4096, rows of 1283 (one element at a time), h 2304 (longer than a block's 256 x 8
        // elements: the threads loop), h 64 (most of one warp idle), 1001 rows (a last weight-gradient part of one row).
        foreach (var (rows, h) in new[] { (16L * 1024, 2048L), (2048L, 2048L), (4096L, 4096L), (77L, 1283L), (4096L, 2304L), (4096L, 64L), (1001L, 2048L) })
            foreach (var c in AddNorm(device, rows, h, layerNorm: false)) yield return c;
        // With the hidden dropout fused (Megatron's bias-dropout-add, p 0.1): caat-1b's rows, one element at a time, looping threads.
        foreach (var (rows, h) in new[] { (16L * 1024, 2048L), (77L, 1283L), (4096L, 2304L) })
            foreach (var c in AddNorm(device, rows, h, layerNorm: false, dropout: 0.1)) yield return c;
        // A tensor-parallel rank's shards at t = 8: SwiGLU over ffn / 8 (caat-130m 2048, Llama-7B 11008), the QKV of its
        // heads / 8 and groups / 8 (caat-1b: one group of 4 heads, d 64; caat-130m: 2 heads, d 48; Llama-7B: 4 heads, d 128).
        foreach (var c in SwiGlu(device, 1024, 2048 / 8)) yield return c;
        foreach (var c in SwiGlu(device, 1024, 11008 / 8)) yield return c;
        foreach (var (groups, perGroup, headDim) in new[] { (1L, 4L, 64L), (2L, 1L, 48L), (4L, 1L, 128L) })
            foreach (var c in QkvRotary(device, batch: 2, seq: 96, groups, perGroup, headDim)) yield return c;
    }

    /// <summary>The GPT path's kernels against libtorch's operators: the residual add + LayerNorm, the embedding with positions.</summary>
    public static IEnumerable<KernelComparison> CompareGpt(Device device)
    {
        // gpt2-large: 32 x 1024 rows of h 1280; a TP-2 rank under sequence parallelism holds half the rows (the norm is
        // replicated, the sequence split); rows of 1283 take the one-element-at-a-time kernels; h 2304 (gpt-1.7b) is longer
        // than a block's 256 x 8 elements, so its threads loop; h 64 leaves most of one warp idle; 1001 rows leave the
        // weight-gradient reduction a last part of one row.
        foreach (var (rows, h) in new[] { (32L * 1024, 1280L), (16L * 1024, 1280L), (77L, 1283L), (4096L, 2304L), (4096L, 64L), (1001L, 1280L) })
            foreach (var c in AddNorm(device, rows, h, layerNorm: true)) yield return c;
        // With gpt2's hidden dropout (p 0.1) fused: its rows, one element at a time, looping threads.
        foreach (var (rows, h) in new[] { (32L * 1024, 1280L), (77L, 1283L), (4096L, 2304L) })
            foreach (var c in AddNorm(device, rows, h, layerNorm: true, dropout: 0.1)) yield return c;
        // gpt2-large's table (50304 rows, 1024 positions) at micro-batch 8; a TP-2 rank's half of it, both ranks' starts
        // (the positions are then added after the all-reduce, outside the kernel); a context-parallel rank's positions (its
        // two chunks of s / 4: Megatron's load balancing at c = 2); rows of 1283.
        foreach (var c in Embedding(device, vocab: 50304, h: 1280, batch: 8, seq: 1024, shards: 1, rank: 0, contextParallel: false)) yield return c;
        foreach (var c in Embedding(device, vocab: 50304, h: 1280, batch: 8, seq: 1024, shards: 1, rank: 0, contextParallel: true)) yield return c;
        foreach (var rank in new[] { 0, 1 })
            foreach (var c in Embedding(device, vocab: 50304, h: 1280, batch: 8, seq: 1024, shards: 2, rank, contextParallel: false)) yield return c;
        foreach (var c in Embedding(device, vocab: 1000, h: 1283, batch: 2, seq: 96, shards: 1, rank: 0, contextParallel: false)) yield return c;
        // 16 x 1024 tokens of h 1283, one element per thread: 21M, more than the grid's 65536 blocks cover in one pass.
        foreach (var c in Embedding(device, vocab: 1000, h: 1283, batch: 16, seq: 1024, shards: 1, rank: 0, contextParallel: false)) yield return c;
    }

    /// <summary>
    /// (norm(x + r), x + r) from the fused kernel (LayerNorm with a bias, or RMSNorm without) against libtorch's bf16 add (the
    /// sum must be the same bits: both round the float32 sum once) and the norm in float32 over that sum (libtorch's
    /// layer_norm; RMSNorm's x·rsqrt(mean(x²) + eps)·w), forward and backward; the gradient arriving on the sum is added to the
    /// norm's input gradient, and x and r must both receive it. With <paramref name="dropout"/> the kernel drops r: the
    /// reference drops it with the mask <see cref="Philox"/> rebuilds from the draw's seed on the host (so the sum's bits
    /// also say the kernel drew exactly that mask), and r's gradient is d(x + r), rounded, through the same mask.
    /// </summary>
    private static IEnumerable<KernelComparison> AddNorm(Device device, long rows, long h, bool layerNorm, double dropout = 0)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(23);
        Tensor Draw(long[] shape, double scale, double shift = 0) =>
            randn(shape, generator: generator).Times(scale).Plus(shift).to(ScalarType.BFloat16).to(device);
        var x = Draw([rows, h], 1).requires_grad_();
        var r = Draw([rows, h], 0.5, 0.1).requires_grad_();
        var gamma = Draw([h], 0.2, 1).requires_grad_();
        var beta = layerNorm ? Draw([h], 0.1).requires_grad_() : null;
        Tensor dy = Draw([rows, h], 1), ds = Draw([rows, h], 0.3);
        DropoutDraw? drop = dropout > 0 ? new DropoutDraw(dropout, 0x5EED_2026_1207L) : null;
        var (y, sum) = AddNormFunction.Apply(x, r, gamma, beta, 1e-5, drop);
        BackwardFailure.Run(() => autograd.backward(new[] { y, sum }, new[] { dy, ds }));

        var factors = drop is { } d ? tensor(Philox.DropoutFactors(rows * h, d), device: device).reshape(rows, h) : null;
        var dropped = factors is null ? r.detach() : r.detach().to(ScalarType.Float32).mul(factors).to(ScalarType.BFloat16);
        var sum0 = x.detach().Plus(dropped).to(ScalarType.Float32).requires_grad_();
        var gamma32 = gamma.detach().to(ScalarType.Float32).requires_grad_();
        var beta32 = beta?.detach().to(ScalarType.Float32).requires_grad_();
        var y0 = beta32 is null ? Norms.RmsNormalized(sum0, 1e-5) * gamma32 : nn.functional.layer_norm(sum0, new[] { h }, gamma32, beta32, 1e-5);
        y0.backward(new[] { dy.to(ScalarType.Float32) });
        var dsum0 = sum0.grad!.Plus(ds.to(ScalarType.Float32));
        var dr0 = factors is null ? dsum0 : dsum0.to(ScalarType.BFloat16).to(ScalarType.Float32).mul(factors);
        string shape = $"[{rows} x {h}]", norm = (layerNorm ? "layernorm" : "rmsnorm") + (drop is null ? "" : $", dropout {dropout}");
        yield return new($"residual add + {norm} forward: sum {shape} (bit-exact)", AbsoluteError(sum, sum0), 0);
        // The reference rounds nothing; the kernel rounds y, d(x + r) and the weight gradients once, after float32 arithmetic
        // (rsqrtf, sums in another order). Rounding to nearest bf16 is within half a step, 2^-8 of a value at the bottom of
        // its binade: up to 2^-8 of the largest value, so the tolerance is two steps (2^-7), as the QKV kernel's.
        yield return new($"residual add + {norm} forward: normalized {shape}", ScaledError(y, y0), 2 * Bf16Step);
        yield return new($"residual add + {norm} backward: d(x + r) {shape}", new[] { ScaledError(x.grad!, dsum0), ScaledError(r.grad!, dr0) }.Max(), 2 * Bf16Step);
        double weightError = beta is null ? ScaledError(gamma.grad!, gamma32.grad!) : Math.Max(ScaledError(gamma.grad!, gamma32.grad!), ScaledError(beta.grad!, beta32!.grad!));
        yield return new($"residual add + {norm} backward: d gamma{(layerNorm ? ", d beta" : "")} over {rows} rows", weightError, 2 * Bf16Step);
    }

    /// <summary>
    /// The embedding kernel against libtorch's lookup: on one rank word rows plus position rows (the same bits as libtorch's
    /// gather and bf16 add, which round the float32 sum once), under tensor parallelism rank <paramref name="rank"/>'s rows of
    /// the table with the other ranks' ids as zero rows; backward against float32 index-adds and the batch sum.
    /// </summary>
    private static IEnumerable<KernelComparison> Embedding(Device device, long vocab, long h, long batch, long seq, int shards, int rank, bool contextParallel)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(29);
        long rows = vocab / shards, start = rank * rows;
        var table = randn(new[] { vocab, h }, generator: generator).Times(0.02).to(ScalarType.BFloat16).to(device);
        var word = table.narrow(0, start, rows).clone().requires_grad_();
        var position = randn(new[] { 2 * seq, h }, generator: generator).Times(0.01).to(ScalarType.BFloat16).to(device).requires_grad_();
        var ids = randint(0, vocab, new[] { batch, seq }, generator: generator).to(device);
        // A context-parallel rank at c = 2 holds chunks 0 and 3 of four (Megatron's load balancing) of a sequence of 2·seq.
        var positionIds = (contextParallel
            ? cat(new[] { HeldScalars.Positions(0, seq / 2), HeldScalars.Positions(3 * seq / 2, 2 * seq) })
            : HeldScalars.Positions(0, seq)).to(device);
        var dy = (randn(new[] { batch, seq, h }, generator: generator)).to(ScalarType.BFloat16).to(device);
        bool positions = shards == 1;
        var output = positions ? EmbeddingFunction.Apply(ids, word, start, position, positionIds) : EmbeddingFunction.Apply(ids, word, start);
        BackwardFailure.Run(() => output.backward(new[] { dy }));

        using Scalar first = start.ToScalar(), end = (start + rows).ToScalar();
        var inside = ids.ge(first).logical_and_(ids.lt(end));
        var local = ids.sub(first).FilledWhere(inside.logical_not(), 0);
        var expected = word.detach().index_select(0, local.reshape(-1)).reshape(batch, seq, h).FilledWhere(inside.logical_not().unsqueeze(-1), 0);
        if (positions) expected = expected.Plus(position.detach().index_select(0, positionIds));
        var dy32 = dy.to(ScalarType.Float32).FilledWhere(inside.logical_not().unsqueeze(-1), 0).reshape(-1, h);
        var dword0 = zeros(new[] { rows, h }, device: device).index_add_(0, local.reshape(-1), dy32, HeldScalars.One);
        string shape = $"[{batch} x {seq}] ids, table [{rows} x {h}]" + (shards > 1 ? $" (rank {rank} of {shards}: rows from {start})" : "") +
                       (contextParallel ? ", a context-parallel rank's positions" : "");
        yield return new($"embedding{(positions ? " + positions" : "")} forward {shape} (bit-exact)", AbsoluteError(output, expected), 0);
        // bf16 gradients against float32 sums: libtorch's indexing backward (EmbeddingFunction.Rows) sums an id's repeats in
        // float32 and rounds once, the batch sum rounds once; four steps, as when the repeats were added in bf16 (8192 ids
        // over 50304 rows repeat a few times), until a GPU has shown the tighter bound.
        yield return new($"embedding backward: d word {shape}", ScaledError(word.grad!, dword0), 4 * Bf16Step);
        if (positions)
        {
            var dposition0 = zeros(new[] { 2 * seq, h }, device: device).index_add_(0, positionIds, dy.to(ScalarType.Float32).sum(0L), HeldScalars.One);
            yield return new($"embedding backward: d position {shape}", ScaledError(position.grad!, dposition0), 2 * Bf16Step);
        }
    }

    /// <summary>
    /// The fused QKV split with rotary positions against the projection's views rotated by libtorch (TorchScript), forward
    /// and backward; the incoming gradients are transposed views, as attention's backward leaves them.
    /// </summary>
    private static IEnumerable<KernelComparison> QkvRotary(Device device, long batch, long seq, long groups, long headsPerGroup, long headDim)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(19);
        long heads = groups * headsPerGroup, width = groups * (headsPerGroup + 2) * headDim;
        using var rotary = new RotaryEmbedding(headDim, 2 * seq, ScalarType.BFloat16, device);
        var projected = randn(new[] { batch, seq, width }, generator: generator).to(ScalarType.BFloat16).to(device).requires_grad_();
        Tensor Upstream(long n) => randn(new[] { batch, n, seq, headDim }, generator: generator).to(ScalarType.BFloat16).to(device).transpose(1, 2);
        Tensor dq = Upstream(heads), dk = Upstream(groups), dv = Upstream(groups);
        var (cos, signedSin) = rotary.Tables;
        var (q, k, v) = QkvRotaryFunction.Apply(projected, cos, signedSin, groups, headsPerGroup, headDim);
        BackwardFailure.Run(() => autograd.backward(new[] { q, k, v }, new[] { dq, dk, dv }));
        var reference = projected.detach().clone().requires_grad_();
        var parts = reference.view(batch, seq, groups, headsPerGroup + 2, headDim).split(new[] { headsPerGroup, 1, 1 }, dim: 3);
        var q0 = rotary.Apply(parts[0]).reshape(batch, seq, heads, headDim);
        var k0 = rotary.Apply(parts[1]).reshape(batch, seq, groups, headDim);
        var v0 = parts[2].reshape(batch, seq, groups, headDim);
        autograd.backward(new[] { q0, k0, v0 }, new[] { dq, dk, dv });
        string shape = $"[{batch} x {seq} x {width}], {groups} groups of {headsPerGroup} heads";
        // Against the largest value, within one bf16 step of it (2^-7 relative): the reference rounds its products to
        // bf16 before adding them, the kernel rounds once, so the two may sit one step apart.
        yield return new($"qkv split + rotary forward {shape}", new[] { ScaledError(q, q0), ScaledError(k, k0), ScaledError(v, v0) }.Max(), 2 * Bf16Step);
        yield return new($"qkv split + rotary backward {shape}", ScaledError(projected.grad!, reference.grad!), 2 * Bf16Step);
    }

    /// <summary>main += dyᵀ·x through the fused GEMM against the float32 product (error relative to its largest value).</summary>
    private static KernelComparison WeightGradientAccumulation(Device device, long tokens, long outFeatures, long inFeatures)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(17);
        var dy = randn(new[] { tokens, outFeatures }, generator: generator).to(ScalarType.BFloat16).to(device);
        var x = randn(new[] { tokens, inFeatures }, generator: generator).to(ScalarType.BFloat16).to(device);
        var main = randn(new[] { outFeatures, inFeatures }, generator: generator).to(device);
        var expected = main.Plus(MatrixProduct.Of(dy.to(ScalarType.Float32).t(), x.to(ScalarType.Float32)));
        WeightGradient.Accumulate(main, dy, x);
        double error = (main - expected).abs().max().item<float>() / expected.abs().max().item<float>();
        return new($"gradient-accumulation GEMM [{outFeatures} x {tokens}] x [{tokens} x {inFeatures}] into float32", error, 1e-5);
    }

    private static IEnumerable<KernelComparison> SwiGlu(Device device, long rows, long f)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(7);
        var x = randn(new[] { rows, 2 * f }, generator: generator).Times(3).to(ScalarType.BFloat16).to(device).requires_grad_();
        var dy = randn(new[] { rows, f }, generator: generator).to(ScalarType.BFloat16).to(device);
        var y = SwiGluFunction.Apply(x);
        BackwardFailure.Run(() => y.backward(new[] { dy }));
        var x32 = x.detach().to(ScalarType.Float32).requires_grad_();
        var halves = x32.chunk(2, -1);
        var reference = nn.functional.silu(halves[0]) * halves[1];
        reference.backward(new[] { dy.to(ScalarType.Float32) });
        yield return new($"swiglu forward [{rows} x {2 * f}]", RelativeError(y, reference), Bf16Step);
        yield return new($"swiglu backward [{rows} x {2 * f}]", RelativeError(x.grad!, x32.grad!), Bf16Step);
    }

    private static IEnumerable<KernelComparison> CrossEntropy(Device device, long rows, long vocab)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(11);
        var logits = randn(new[] { rows, vocab }, generator: generator).Times(4).to(ScalarType.BFloat16).to(device).requires_grad_();
        var labels = randint(0, vocab, new[] { rows }, generator: generator).to(device);
        var dloss = rand(new[] { rows }, generator: generator).to(device);
        var loss = CrossEntropyFunction.Apply(logits, labels);
        BackwardFailure.Run(() => loss.backward(new[] { dloss }));
        var logits32 = logits.detach().to(ScalarType.Float32).requires_grad_();
        var reference = nn.functional.cross_entropy(logits32, labels, reduction: nn.Reduction.None);
        reference.backward(new[] { dloss });
        // The loss is float32 both ways (only the summation order differs); the gradient is rounded to bf16.
        yield return new($"cross-entropy forward [{rows} x {vocab}]", RelativeError(loss, reference), 1e-5);
        yield return new($"cross-entropy backward [{rows} x {vocab}]", ScaledError(logits.grad!, logits32.grad!), Bf16Step);
    }

    private static IEnumerable<KernelComparison> AdamWStep(Device device, long n)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(13);
        Tensor Draw(double scale, bool positive = false) =>
            (positive ? rand(n, generator: generator) : randn(n, generator: generator)).Times(scale).to(device);
        var options = new AdamSettings(ClipGrad: 0.5);
        Tensor w = Draw(0.02), g = Draw(1e-3), m = Draw(1e-4), v = Draw(1e-8, positive: true);
        Tensor w2 = w.clone(), m2 = m.clone(), v2 = v.clone(), g2 = g.clone(), param = empty(n, dtype: ScalarType.BFloat16, device: device);
        long decayed = n / 2;
        const double lr = 3e-4;
        const long step = 7;
        var norm = g.norm();
        FusedKernels.AdamW(w, g, m, v, param, decayed, norm, AdamW.Scalars(options, lr, step));
        GradientClip.Clip(g2, norm, options.ClipGrad);
        AdamW.Update(w2, g2, m2, v2, decayed, options, lr, step);
        // float32 against libtorch's float32 arithmetic (fused multiply-adds, a reciprocal for the division by a scalar)
        double error = new[] { RelativeError(w, w2), RelativeError(m, m2), RelativeError(v, v2) }.Max();
        yield return new($"adamw step ({n:N0} parameters)", error, 1e-5);
        // The bf16 weights are the new float32 ones rounded to nearest even, exactly as libtorch casts them.
        yield return new("adamw step: bf16 weights = the float32 ones cast", AbsoluteError(param, w.to(ScalarType.BFloat16)), 0);
    }

    public static IEnumerable<KernelTiming> Time(Device device)
    {
        const long tokens = 16384, f = 5632, vocab = 32000, parameters = 256L << 20;
        using (var scope = NewDisposeScope())
        {
            var x = randn(new[] { tokens, 2 * f }, dtype: ScalarType.BFloat16, device: device).requires_grad_();
            var dy = randn(new[] { tokens, f }, dtype: ScalarType.BFloat16, device: device);
            yield return new($"swiglu forward + backward [{tokens} x {2 * f}] bf16",
                Median(() => BackwardFailure.Run(() => SwiGluFunction.Apply(x).backward(new[] { dy }))), Median(() => ScriptedKernels.SwiGlu(x).backward(new[] { dy })));
        }
        foreach (var timing in AddNormTiming(device, tokens, 2048, layerNorm: false)) yield return timing;
        using (var scope = NewDisposeScope())
        {
            var logits = randn(new[] { tokens, vocab }, dtype: ScalarType.BFloat16, device: device).requires_grad_();
            var labels = randint(0, vocab, new[] { tokens }, device: device);
            yield return new($"cross-entropy forward + backward [{tokens} x {vocab}] bf16 logits",
                Median(() => BackwardFailure.Run(() => CrossEntropyFunction.Apply(logits, labels).mean().backward())),
                Median(() => nn.functional.cross_entropy(logits.to(ScalarType.Float32), labels).backward()));
        }
        using (var scope = NewDisposeScope())
        {
            Tensor w = randn(parameters, device: device), g = randn(parameters, device: device).Times(1e-3),
                m = zeros(parameters, device: device), v = zeros(parameters, device: device), p = empty(parameters, dtype: ScalarType.BFloat16, device: device);
            var o = new AdamSettings();
            yield return new($"adamw step + bf16 copy ({parameters:N0} parameters)",
                Median(() => FusedKernels.AdamW(w, g, m, v, p, parameters, g.norm(), AdamW.Scalars(o, 1e-4, 3))),
                Median(() =>
                {
                    using var norm = g.norm();
                    GradientClip.Clip(g, norm, o.ClipGrad);
                    AdamW.Update(w, g, m, v, parameters, o, 1e-4, 3);
                    p.copy_(w);
                }));
        }
    }

    /// <summary>The GPT path's kernels and libtorch's operators at gpt2-large's shapes (micro-batch 32, s 1024, h 1280).</summary>
    public static IEnumerable<KernelTiming> TimeGpt(Device device)
    {
        const long batch = 32, seq = 1024, h = 1280, vocab = 50304;
        foreach (var timing in AddNormTiming(device, batch * seq, h, layerNorm: true)) yield return timing;
        foreach (var timing in AddNormTiming(device, batch * seq, h, layerNorm: true, dropout: 0.1)) yield return timing;
        using (var scope = NewDisposeScope())
        {
            var word = randn(new[] { vocab, h }, dtype: ScalarType.BFloat16, device: device).requires_grad_();
            var position = randn(new[] { seq, h }, dtype: ScalarType.BFloat16, device: device).requires_grad_();
            var ids = randint(0, vocab, new[] { batch, seq }, device: device);
            var positionIds = HeldScalars.Positions(0, seq, device);
            var dy = randn(new[] { batch, seq, h }, dtype: ScalarType.BFloat16, device: device);
            yield return new($"embedding + positions forward + backward [{batch} x {seq}] ids, table [{vocab} x {h}] bf16",
                Median(() => BackwardFailure.Run(() => EmbeddingFunction.Apply(ids, word, 0, position, positionIds).backward(new[] { dy }))),
                Median(() => word.index_select(0, ids.reshape(-1)).reshape(batch, seq, h).Plus(position).backward(new[] { dy })));
        }
    }

    /// <summary>The fused residual add + norm against libtorch's add and norm (LayerNorm, or RMSNorm through aten::rms_norm); with
    /// <paramref name="dropout"/>, the fused bias-dropout-add against libtorch's dropout before the add.</summary>
    private static IEnumerable<KernelTiming> AddNormTiming(Device device, long rows, long h, bool layerNorm, double dropout = 0)
    {
        using var scope = NewDisposeScope();
        var x = randn(new[] { rows, h }, dtype: ScalarType.BFloat16, device: device).requires_grad_();
        var r = randn(new[] { rows, h }, dtype: ScalarType.BFloat16, device: device).requires_grad_();
        var gamma = ones(h, dtype: ScalarType.BFloat16, device: device).requires_grad_();
        var beta = layerNorm ? zeros(h, dtype: ScalarType.BFloat16, device: device).requires_grad_() : null;
        var dy = randn(new[] { rows, h }, dtype: ScalarType.BFloat16, device: device);
        DropoutDraw? drop = dropout > 0 ? new DropoutDraw(dropout, 7) : null;
        yield return new($"residual add + {(layerNorm ? "layernorm" : "rmsnorm")}{(drop is null ? "" : $" + dropout {dropout}")} forward + backward [{rows} x {h}] bf16",
            Median(() => BackwardFailure.Run(() =>
            {
                var (y, sum) = AddNormFunction.Apply(x, r, gamma, beta, 1e-5, drop);
                autograd.backward(new[] { y, sum }, new[] { dy, dy });
            })),
            Median(() =>
            {
                var sum = x.Plus(drop is null ? r : nn.functional.dropout(r, dropout, training: true));
                var y = beta is null ? ScriptedKernels.RmsNorm(sum, gamma, 1e-5) : nn.functional.layer_norm(sum, new[] { h }, gamma, beta, 1e-5);
                autograd.backward(new[] { y, sum }, new[] { dy, dy });
            }));
    }

    /// <summary>Median wall time of <paramref name="work"/> with the device drained before and after, after warm-up.</summary>
    private static double Median(Action work)
    {
        var times = new List<double>();
        for (int i = 0; i < 13; i++)
        {
            using var scope = NewDisposeScope();
            cuda.synchronize();
            long start = Stopwatch.GetTimestamp();
            work();
            cuda.synchronize();
            if (i >= 3) times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>Largest |actual - expected| over the largest |expected|.</summary>
    private static double ScaledError(Tensor actual, Tensor expected) =>
        AbsoluteError(actual, expected) / expected.to(ScalarType.Float32).abs().max().item<float>();

    private static double AbsoluteError(Tensor actual, Tensor expected) =>
        (actual.to(ScalarType.Float32) - expected.to(ScalarType.Float32)).abs().max().item<float>();

    /// <summary>Largest |actual - expected| / max(|expected|, 1e-3): relative where values are not tiny.</summary>
    private static double RelativeError(Tensor actual, Tensor expected)
    {
        var e = expected.to(ScalarType.Float32);
        using var floor = 1e-3.ToScalar();   // held until the call returns (HeldScalars says why)
        return ((actual.to(ScalarType.Float32) - e).abs() / e.abs().clamp_min(floor)).max().item<float>();
    }
}
