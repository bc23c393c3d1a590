using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Schedule;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>--transformer-impl harness: the simulator costs the executor's own fused kernels where they run (bf16, the
/// executor's kernels on), derived by hand for one small model on an H100 SXM (3350 GB/s, HBM efficiency 0.80).</summary>
public class TransformerImplTests
{
    // s 1024, h 512, 8 heads of 64 in 2 query groups (kv = 128 channels), vocabulary 32000, micro-batch 2: T = 2048 tokens.
    private static readonly ModelSpec Model = ModelPresets.All["llama-7b"] with
    {
        NumLayers = 2, HiddenSize = 512, NumAttentionHeads = 8, NumQueryGroups = 2, FfnHiddenSize = 1024, SeqLength = 1024, VocabSize = 32000,
    };
    private static readonly GpuSpec H100 = GpuPresets.All["h100-sxm"];
    private static readonly RunDescription Megatron = new(Precision: Precision.Bf16, MicroBatch: 2, GlobalBatch: 2);
    private static readonly RunDescription Executor = Megatron with { Implementation = TransformerImpl.Harness };
    private const double Hbm = 3350e9 * 0.80;
    private const double Logits = 2048.0 * 32000;

    private static void Exact(double expected, double actual) => Assert.Equal(expected, actual, Math.Abs(expected) * 1e-9);

    /// <summary>The executor's final norm with the last layer's residual add, its kernels running: 4 bf16 elements of h per
    /// token forward, 7 backward (the zeros TorchSharp writes for the unused sum's gradient, and the add-norm's 6); 2048
    /// tokens of h 512.</summary>
    private static readonly (double Forward, double Backward) FinalNorm = (2048.0 * 512 * 4 * 2 / Hbm, 2048.0 * 512 * 7 * 2 / Hbm);

    [Fact]
    public void TheFusedCrossEntropyReadsTheBf16LogitsOnceEachWay()
    {
        var (megatronForward, megatronBackward) = ComputeTime.OutputLayer(Model, Megatron, H100);
        var (forward, backward) = ComputeTime.OutputLayer(Model, Executor, H100);
        // Megatron: 5 fp32 passes forward, 3 backward (20 and 12 B per logit); the executor's kernel: 2 B forward, 2 + 2 B
        // backward, and its final norm, which Megatron's count leaves out.
        Exact(Logits * (20 - 2) / Hbm - FinalNorm.Forward, megatronForward - forward);
        Exact(Logits * (12 - 4) / Hbm - FinalNorm.Backward, megatronBackward - backward);
    }

    [Theory]
    [InlineData("no fused kernels")]
    [InlineData("fp32")]
    [InlineData("tensor parallel")]
    public void WhereTheFusedCrossEntropyDoesNotRunTheLossCostsWhatMegatronsDoes(string where)
    {
        var d = where switch
        {
            "no fused kernels" => Executor with { FusedKernels = false },
            "fp32" => Executor with { Precision = Precision.Fp32 },
            _ => Executor with { TensorParallel = 2 },
        };
        var (megatronForward, megatronBackward) = ComputeTime.OutputLayer(Model, d with { Implementation = TransformerImpl.TransformerEngine }, H100);
        var (forward, backward) = ComputeTime.OutputLayer(Model, d, H100);
        // Under tensor parallelism the executor's norms still run: its final norm (on every rank's whole h) is the difference.
        var norm = where == "tensor parallel" ? FinalNorm : (0, 0);
        Exact(megatronForward + norm.Item1, forward);
        Exact(megatronBackward + norm.Item2, backward);
    }

    [Fact]
    public void TheFusedQkvRotaryKernelMovesAllOfQkvOnce()
    {
        // Transformer Engine rotates Q and K: 2·2·(512 + 128) B per token; the executor's kernel reads and writes Q, K and V:
        // 2·2·(512 + 2·128), 2·2·128 B more per token. Its residual adds fused with the RMSNorms after them do not read the
        // sums back: 2·512 B less per token for the MLP's, and for the input norm's of the second of the two layers, half
        // as much per layer. 2048 tokens.
        double megatron = ComputeTime.Layer(Model, Megatron, H100).ElementwiseForward;
        double executor = ComputeTime.Layer(Model, Executor, H100).ElementwiseForward;
        Exact(2048 * (2 * 2 * 128 - 2 * 512 * 1.5) / Hbm, executor - megatron);
        // Under --no-norm-fusion the add and the norm are libtorch's (both paths alike): the rotary difference alone.
        Exact(2048 * 2 * 2 * 128 / Hbm, ComputeTime.Layer(Model, Executor with { FusedNorm = false }, H100).ElementwiseForward
                                         - ComputeTime.Layer(Model, Megatron with { FusedNorm = false }, H100).ElementwiseForward);
        // Under context parallelism the kernel does not run (positions are not 0..s-1): libtorch rotates Q and K as Megatron
        // does, and the fused adds' saving is the difference alone (1024 tokens a rank).
        var cp = Megatron with { ContextParallel = 2 };
        Exact(1024 * 2 * 512 * 1.5 / Hbm, ComputeTime.Layer(Model, cp, H100).ElementwiseForward
                                     - ComputeTime.Layer(Model, cp with { Implementation = TransformerImpl.Harness }, H100).ElementwiseForward);
    }

    /// <summary>The Llama path's backward, kernel by kernel (h 512, kv 128, f 1024, 2 layers, 2048 tokens, e = 2 B): each
    /// add-norm's two kernels move 4 + 2 elements of h (the MLP's in both layers, the input norm's in the second, u = 1/2);
    /// the first layer's summed input, libtorch's RMSNorm backward (3 + 2) and its branch's gradients summed (3); the QKV
    /// rotary backward as many bytes as forward, 2·(h + 2·kv); the fused SwiGLU backward reads the product's gradient, gate
    /// and up and writes theirs, 5 of f. Megatron's count stays at twice its forward.</summary>
    [Fact]
    public void TheLlamaPathsBackwardIsCountedOneByOne()
    {
        double e = 2, h = 512, kv = 128, f = 1024, u = 0.5, gap = 20 * 4e-6;
        var fused = Executor with { FusedSwiGlu = true };
        double backward = (6 * e + u * 6 * e + (1 - u) * 8 * e) * h + 2 * e * (h + 2 * kv) + 5 * e * f;
        Exact(2048 * backward / Hbm + 2 * gap, ComputeTime.Layer(Model, fused, H100).ElementwiseBackward);
        // libtorch's SwiGLU (5 of f forward) costs twice its forward backward.
        Exact(2048 * (2 * 5 - 5) * e * f / Hbm, ComputeTime.Layer(Model, fused with { FusedSwiGlu = false }, H100).ElementwiseBackward
                                               - ComputeTime.Layer(Model, fused, H100).ElementwiseBackward);
        var megatron = ComputeTime.Layer(Model, Megatron, H100);
        Exact(2 * (megatron.ElementwiseForward - gap), megatron.ElementwiseBackward - 2 * gap);
        // Under --kaimm-recompute-norm the norms run inside the linears, after libtorch's adds: 3 + 5 backward for each of the
        // two, against 1.5 fused add-norms' 6 and half a summed input's 8.
        Exact(2048 * (2 * 8 - (1.5 * 6 + 0.5 * 8)) * e * h / Hbm, ComputeTime.Layer(Model, fused with { Recompute = RecomputeSpec.Kwai }, H100).ElementwiseBackward
                                                             - ComputeTime.Layer(Model, fused, H100).ElementwiseBackward);
    }

    /// <summary>The final norm: fused with the last layer's add where the residual reaches it unsummed (4 forward, 7 back);
    /// libtorch's add and norm under --kaimm-recompute-norm and where uniform full recomputation's last group hands over its
    /// sum (3 + 2 forward, 3 + 2 backward: the sum feeds the norm alone); hidden dropout adds the fused backward's delta
    /// gradient (1), or libtorch's mask kernel (2 elements and a byte each way).</summary>
    [Fact]
    public void TheFinalNormFusesWhereTheResidualArrivesUnsummed()
    {
        double elements = 2048.0 * 512, e = 2;
        (double, double) Norm(ModelSpec m, RunDescription d)
        {
            var (forward, backward) = ComputeTime.OutputLayer(m, d, H100);
            var (loss, lossBackward) = ComputeTime.OutputLayer(m, d with { FusedNorm = false }, H100);
            return (forward - loss, backward - lossBackward);
        }
        var (f, b) = Norm(Model, Executor);
        Exact(FinalNorm.Forward, f);
        Exact(FinalNorm.Backward, b);
        foreach (var d in new[] { Executor with { Recompute = RecomputeSpec.Kwai }, Executor with { Recompute = RecomputeSpec.FullUniform() } })
        {
            (f, b) = Norm(Model, d);
            Exact(elements * 5 * e / Hbm, f);
            Exact(elements * 5 * e / Hbm, b);
        }
        var dropout = Model with { HiddenDropout = 0.1 };
        (f, b) = Norm(dropout, Executor);
        Exact(elements * 8 * e / Hbm, b);
        (f, b) = Norm(dropout, Executor with { Recompute = RecomputeSpec.Kwai });
        Exact(elements * (5 * e + 2 * e + 1) / Hbm, f);
    }

    [Fact]
    public void TheFusedCrossEntropyKeepsTheBf16LogitsNotAnFp32Softmax()
    {
        var cluster = new ClusterSpec(H100, 1, 1);
        var megatron = PipelineCosts.Build(Model, cluster, Megatron);
        var executor = PipelineCosts.Build(Model, cluster, Executor);
        // Megatron saves the fp32 softmax (4 B per logit) and holds the bf16 logits while the loss forms; the executor keeps the
        // bf16 logits (2 B) and needs nothing more forward; backward both write a bf16 gradient beside what they kept.
        Exact(Logits * (4 - 2), megatron.LastExtraActivations - executor.LastExtraActivations);
        Exact(Logits * 2, megatron.LastForwardTransient - executor.LastForwardTransient);
        Exact(megatron.LastBackwardTransient, executor.LastBackwardTransient);
    }

    /// <summary>gpt2-large's shape at micro-batch 2 (T = 2048 tokens of h 1280), with and without dropout.</summary>
    private static readonly ModelSpec Gpt = ModelPresets.All["gpt2-large"] with { NumLayers = 2 };

    /// <summary>
    /// The GPT path's memory-bound bytes per token, kernel by kernel, with the executor's kernels (gradient-accumulation
    /// fusion on, as by default), for gpt2-large's shape cut to 2 layers at micro-batch 2 (T = 2048 tokens; h 1280, f 5120,
    /// QKV 3840, e = 2 B): each residual add fused with its LayerNorm reads x and r and writes the sum and the output (4 of h)
    /// and backward moves 4 + 2; the MLP's in both layers, the input norm's in the second (a share u = 1/2). The first
    /// layer's input arrives summed: libtorch's add (3, and 3 backward for the branch's gradients) and LayerNorm (2, and
    /// 3 + 2 backward), with hidden dropout a mask kernel on the delta (2 elements and a byte, each way), where the fused
    /// kernel's backward writes the delta's gradient apart from the sum's (1 more, add_norm.cuh). GeLU: 2 of f forward,
    /// 3 backward. Each bias added by its GEMM, except the row-parallel ones on tensor-parallel ranks, added after their
    /// reduction (2 of h each), and reduced backward (1 of each output). The QKV gradient concatenated from Q's, K's and V's (2 of QKV). Under sequence
    /// parallelism the norms, adds and the row-parallel biases are a t-th, the rest a t-th by tensor parallelism. Without
    /// the GPT path's kernels every norm is libtorch's after libtorch's add.
    /// </summary>
    [Theory]
    [InlineData(0.1)]
    [InlineData(0.0)]
    public void TheGptPathsKernelsAreCountedOneByOne(double dropout)
    {
        var m = Gpt with { HiddenDropout = dropout, AttentionDropout = dropout };
        double e = 2, h = 1280, f = 5120, qkv = 3840, drop = dropout > 0 ? 2 * e + 1 : 0, gap = 20 * 4e-6;
        // With the GPT path's kernels 1.5 of a layer's 2 norms fuse their adds; without them (libtorch's LayerNorm) none.
        foreach (var (kernels, fused) in new[] { (true, 1.5), (false, 0.0) })
            foreach (int t in (int[])[1, 2])
            {
                double sp = t, biases = (qkv + f) / t + 2 * h / sp;
                double forward = (fused * 4 * e + (2 - fused) * (5 * e + drop)) * h / sp + 2 * e * f / t + (t > 1 ? 2 * e * 2 * h / sp : 0);
                double backward = (fused * (6 * e + (dropout > 0 ? e : 0)) + (2 - fused) * (8 * e + drop)) * h / sp + 3 * e * f / t + 2 * e * qkv / t + e * biases;
                var layer = ComputeTime.Layer(m, Executor with { TensorParallel = t, SequenceParallel = t > 1, FusedGptKernels = kernels }, H100);
                Exact(2048 * forward / Hbm + gap, layer.ElementwiseForward);
                Exact(2048 * backward / Hbm + 2 * gap, layer.ElementwiseBackward);
            }
        // Parallel ranks (here two data-parallel ones) add the row-parallel linears' biases after their reduction: 2 elements
        // of each of the two outputs of h more forward.
        Exact(2048 * 2 * e * (2 * h) / Hbm, ComputeTime.Layer(m, Executor with { DataParallel = 2, GlobalBatch = 4 }, H100).ElementwiseForward
                                                          - ComputeTime.Layer(m, Executor, H100).ElementwiseForward);
        // Where the executor's kernels or libtorch's fused norms do not run, the count is Megatron's (Transformer Engine's),
        // backward at twice forward: the executor's kernels off, --no-norm-fusion's float32 norms.
        foreach (var off in new[] { Executor with { FusedKernels = false }, Executor with { FusedNorm = false } })
        {
            var layer = ComputeTime.Layer(m, off, H100);
            Assert.Equal(ComputeTime.Layer(m, off with { Implementation = TransformerImpl.TransformerEngine }, H100), layer);
            Exact(2 * (layer.ElementwiseForward - gap), layer.ElementwiseBackward - 2 * gap);
        }
    }

    [Fact]
    public void TheFusedBiasDropoutAddKeepsNoMask()
    {
        // gpt2-large cut to 2 layers, hidden dropout 0.1: Megatron keeps a byte per element of h for each of a layer's two
        // hidden dropouts (2048 tokens x 1280). The executor's residual add + LayerNorm drops inside the kernel and keeps
        // none: the attention's in both layers, the MLP's where the next layer's input add fuses (the first layer's, into the
        // second: a share of 1/2; the last layer's add into the final norm is left out), 1.5 masks per layer.
        var m = Gpt with { HiddenDropout = 0.1 };
        double mask = 2048.0 * 1280;
        Assert.Equal(1.5, ComputeTime.FusedDropoutAdds(m, Executor), 12);
        Exact(1.5 * mask, Activations.Layer(m, Executor with { FusedGptKernels = false }).Saved - Activations.Layer(m, Executor).Saved);
        // Without hidden dropout (attention dropout alone) there is no mask either way; Megatron's kernels keep both masks.
        Assert.Equal(0, ComputeTime.FusedDropoutAdds(m with { HiddenDropout = 0, AttentionDropout = 0.1 }, Executor));
        Exact(0, Activations.Layer(m with { HiddenDropout = 0, AttentionDropout = 0.1 }, Executor with { FusedGptKernels = false }).Saved
                 - Activations.Layer(m with { HiddenDropout = 0, AttentionDropout = 0.1 }, Executor).Saved);
        Exact(2 * mask, Activations.Layer(m, Megatron).Saved - Activations.Layer(m with { HiddenDropout = 0 }, Megatron).Saved);
    }

    [Theory]
    // 24 layers on 4 stages: chunks of 6, the first layer's input summed: 5 of 6 fused; one layer per virtual stage: none.
    [InlineData(null, RecomputeGranularity.None, RecomputeMethod.Uniform, 1, 5.0 / 6)]
    [InlineData(1, RecomputeGranularity.None, RecomputeMethod.Uniform, 1, 0.0)]
    [InlineData(null, RecomputeGranularity.Selective, RecomputeMethod.Uniform, 1, 5.0 / 6)]
    // Full recomputation, uniform groups of 2: 3 groups of 6 layers, each taking a sum: 3 of 6; groups of 4: 2 groups (4 + 2).
    [InlineData(null, RecomputeGranularity.Full, RecomputeMethod.Uniform, 2, 3.0 / 6)]
    [InlineData(null, RecomputeGranularity.Full, RecomputeMethod.Uniform, 4, 4.0 / 6)]
    // Block, the first 2 layers recomputed alone: layers 0, 1 and 2 take a sum; all 6: none fused.
    [InlineData(null, RecomputeGranularity.Full, RecomputeMethod.Block, 2, 3.0 / 6)]
    [InlineData(null, RecomputeGranularity.Full, RecomputeMethod.Block, 6, 0.0)]
    public void TheInputAddsFuseWhereTheResidualPassesUnsummed(int? layersPerVirtualStage, RecomputeGranularity granularity, RecomputeMethod method, int n, double share)
    {
        var m = Model with { NumLayers = 24 };
        var c = Executor with { PipelineParallel = 4, LayersPerVirtualStage = layersPerVirtualStage, Recompute = new RecomputeSpec(granularity, method, n) };
        Assert.Equal(share, ComputeTime.FusedInputAddShare(m, c), 12);
    }

    [Fact]
    public void TheEmbeddingKernelAddsThePositionsInTheGather()
    {
        // Megatron's costing: T·h written forward and scattered backward, 2 elements of 2 B. The executor adds what it moves
        // besides: its kernel reads the word and position rows (2 more); libtorch's gather reads the word row, its add reads
        // the gathered and position rows and writes the sum (4 more); under tensor parallelism libtorch's gather (1) and masked
        // fill (2) before the all-reduce and the add after it (3), the kernel's gather (1) and the same add.
        double Seconds(double elements) => 2048.0 * 1280 * 2 * elements / Hbm;
        Exact(Seconds(2), ComputeTime.Embedding(Gpt, Megatron, H100));
        Exact(Seconds(2 + 2), ComputeTime.Embedding(Gpt, Executor, H100));
        Exact(Seconds(2 + 4), ComputeTime.Embedding(Gpt, Executor with { FusedGptKernels = false }, H100));
        Exact(Seconds(2 + 4), ComputeTime.Embedding(Gpt, Executor with { TensorParallel = 2 }, H100));
        Exact(Seconds(2 + 6), ComputeTime.Embedding(Gpt, Executor with { TensorParallel = 2, FusedGptKernels = false }, H100));
        // Rotary positions (Llama) are no part of the embedding.
        Exact(2048.0 * 512 * 2 * 2 / Hbm, ComputeTime.Embedding(Model, Executor, H100));
    }
}
