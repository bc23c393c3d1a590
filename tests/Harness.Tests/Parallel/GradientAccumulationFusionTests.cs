using Harness.Executor.Distributed;
using Harness.Executor.Training;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// Gradient-accumulation fusion in parallel layouts, on CPU: bf16 ranks whose column- and row-parallel linears add their
/// weight gradients into the float32 main gradients (the CPU fallback forms the same float32 product from float32
/// copies) against the same ranks folding bf16 gradients after each micro-batch. In the first step, from equal weights,
/// the two differ only by the bf16 rounding of each micro-batch's weight gradient, so every main gradient the optimizer
/// sees (after the tensor-parallel, tied-embedding and data-parallel sums) agrees within bf16 precision, while a weight
/// gradient lost, or added twice, would be off by all of itself; losses, gradient norms and the weights after the
/// second step agree as closely.
/// </summary>
public class GradientAccumulationFusionTests
{
    private const int Steps = 2;
    /// <summary>
    /// Relative L2 error per parameter. bf16 keeps 8 significant bits (2^-9 relative rounding per element); the fused
    /// weights' main gradients differ by up to 3e-3, and so do, from run to run, the norm weights' under partial sync
    /// (libtorch's bf16 CPU kernels on concurrent rank threads are not deterministic: bf16 runs compare within tolerance).
    /// </summary>
    private const double Bf16Tolerance = 1e-2;

    /// <summary>One rank's run: losses and gradient norms per step, its first step's main gradients and final weights by serial name.</summary>
    private sealed record RankRun(float[] Losses, float[] Norms, Dictionary<string, float[]> MainGrads, Dictionary<string, float[]> Weights, bool KernelsOn);

    private static RunDescription Config(int dp = 1, int tp = 1, int pp = 1, bool sp = false, int zero = 0, double p = 1, bool overlap = false) =>
        new(DataParallel: dp, TensorParallel: tp, PipelineParallel: pp, SequenceParallel: sp, MicroBatch: 1, GlobalBatch: 2 * dp * pp,
            ZeroStage: zero, SyncFactor: p, Precision: Precision.Bf16, Overlap: new OverlapSpec(GradientReduce: overlap), FusedKernels: false);

    /// <summary>The layout's ranks with gradient-accumulation fusion as <paramref name="fused"/> says (and the kernels as the config says).</summary>
    private static RankRun[] Train(ModelSpec spec, RunDescription config, bool fused, Tensor[] batches) =>
        InProcessJob.Run(config.WorldSize, world =>
        {
            var layout = RankOrder.For(world.Size, config.TensorParallel, config.ContextParallel, config.PipelineParallel);
            using var groups = ProcessGroups.Create(world, layout);
            var dtype = ExecutorSupport.ComputeDtype(config.Precision);
            // fp16 at a loss scale its gradients do not overflow at, so that every step steps.
            var scaling = config.Precision == Precision.Fp16 ? new LossScaleSettings(Constant: 4096) : null;
            using var trainer = new ParallelTrainer(groups, spec, config with { GradientAccumulationFusion = fused, DdpBucketSize = 3000 }, CPU, 5, Reference.Adam, scaling);
            var fusions = trainer.Fusions;
            var linears = trainer.Buffer.Layout.Where(l => l.Name.Contains("linear_")).Where(l => l.Name.EndsWith(".weight")).ToList();
            // Fusion really is on (or off): asked for under bf16, it runs on CPU ranks too (WeightGradient's CPU form); the
            // linears' weights take no autograd gradient, and only they are fused.
            bool on = fused && dtype is ScalarType.BFloat16 or ScalarType.Float16;
            Assert.Equal(on, fusions.GradientAccumulation);
            Assert.Equal(on ? linears.Sum(l => l.Parameter.numel()) : 0, trainer.Buffer.FusedCount);
            Assert.All(linears, l => Assert.Equal(on, l.Parameter.grad is null));
            var buffer = trainer.Buffer;
            float[] Slice(Tensor flat, long offset, long n) => flat.narrow(0, offset, n).to(ScalarType.Float32).data<float>().ToArray();
            var (losses, norms) = (new List<float>(), new List<float>());
            Dictionary<string, float[]>? firstGrads = null;
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                var (loss, norm) = trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength));
                losses.Add(loss);
                norms.Add(norm!.Value);
                // Every bf16 gradient was folded into the main gradients (whether its bucket went mid-backward or after).
                if (buffer.MixedPrecision) Assert.Equal(0, buffer.Grads.count_nonzero().item<long>());
                firstGrads ??= buffer.Layout.ToDictionary(l => l.Name, l => Slice(buffer.MainGrads, l.Offset, l.Parameter.numel()));
            }
            var serialNames = trainer.NamedParameters().ToDictionary(n => (object)n.Parameter, n => n.SerialName, ReferenceEqualityComparer.Instance);
            return new RankRun([.. losses], [.. norms],
                buffer.Layout.ToDictionary(l => serialNames[l.Parameter], l => firstGrads![l.Name]),
                buffer.Layout.ToDictionary(l => serialNames[l.Parameter], l => Slice(buffer.Params, l.Offset, l.Parameter.numel())),
                fusions.Kernels && fusions.GptKernels);
        });

    /// <summary>Fused and unfused runs of the layout agree on every rank within bf16 precision, and the model trains.</summary>
    private static RankRun[] AssertFusionMatchesUnfused(ModelSpec spec, RunDescription config)
    {
        TorchRuntime.Initialize();
        var batches = Reference.Batches(spec, Steps, config.GlobalBatch);
        var unfused = Train(spec, config, fused: false, batches);
        var fused = Train(spec, config, fused: true, batches);
        for (int r = 0; r < fused.Length; r++)
        {
            Reference.AssertClose(fused[r].Losses, unfused[r].Losses, $"rank {r} losses", Bf16Tolerance);
            Reference.AssertClose(fused[r].Norms, unfused[r].Norms, $"rank {r} gradient norms", Bf16Tolerance);
            foreach (var (name, grad) in unfused[r].MainGrads)
                Reference.AssertClose(fused[r].MainGrads[name], grad, $"rank {r} main gradient of {name}", Bf16Tolerance);
            var names = unfused[r].Weights.Keys.Order().ToList();
            Reference.AssertClose(Reference.Concatenated(names.Select(n => fused[r].Weights[n])),
                Reference.Concatenated(names.Select(n => unfused[r].Weights[n])), $"rank {r} final weights", Bf16Tolerance);
            Assert.True(fused[r].Losses[^1] < fused[r].Losses[0], $"rank {r} does not train: {string.Join(", ", fused[r].Losses)}");
        }
        return fused;
    }

    [Fact]
    public void Tp2() => AssertFusionMatchesUnfused(Reference.Llama(), Config(tp: 2));

    [Fact]
    public void Tp2SequenceParallelWithBiases() => AssertFusionMatchesUnfused(Reference.Gpt(), Config(tp: 2, sp: true));

    [Fact]
    public void Tp2PartialSync() => AssertFusionMatchesUnfused(Reference.Llama(), Config(tp: 2, p: 0.5));

    [Fact]
    public void Pp2TiedEmbedding() => AssertFusionMatchesUnfused(Reference.Gpt(), Config(pp: 2));

    /// <summary>fp16 ranks fuse as bf16 ranks do (Megatron's wgrad_gemm_accum_fp32 takes both), with fp16's 11 significant
    /// bits well inside the bf16 tolerance.</summary>
    [Fact]
    public void Fp16Tp2Dp2DistributedOptimizer() => AssertFusionMatchesUnfused(Reference.Llama(), Config(tp: 2, dp: 2, zero: 1) with { Precision = Precision.Fp16 });

    [Fact]
    public void Dp2DistributedOptimizerOverlapped() =>
        // Buckets launched mid-backward (as each layer's marker fires) fold only the unfused parts; the fused weights'
        // main gradients are complete by then, as the linear's backward wrote them before its input's gradient.
        AssertFusionMatchesUnfused(Reference.Llama(), Config(dp: 2, zero: 1, overlap: true));

    [Theory]
    [InlineData(2, 2, 1, false, false)]
    [InlineData(1, 2, 0, false, false)]
    [InlineData(2, 1, 0, true, true)]
    [InlineData(1, 1, 0, true, false)]
    public void FusedKernelsLeaveCpuRanksUnchanged(int tp, int dp, int zero, bool gpt, bool sp)
    {
        // The kernels are CUDA-only: asked for on CPU ranks (SwiGLU, QKV rotary, cross-entropy at tp 1, the replicated
        // and the sharded AdamW; GPT's residual add + LayerNorm and embedding with positions, also through the vocabulary-
        // parallel lookup and under sequence parallelism), every step still runs libtorch's operators: the same ones in the
        // same order, so every bit agrees (CPU runs are reproducible: TorchScript's optimizer is off there, GraphExecutorOptimization).
        TorchRuntime.Initialize();
        var spec = gpt ? Reference.Gpt() : Reference.Llama();
        var config = Config(tp: tp, dp: dp, zero: zero, sp: sp) with { Precision = Precision.Fp32 };
        var batches = Reference.Batches(spec, Steps, config.GlobalBatch);
        var plain = Train(spec, config with { FusedKernels = false }, fused: false, batches);
        var kernels = Train(spec, config with { FusedKernels = true }, fused: true, batches);
        Assert.True(kernels[0].KernelsOn, "the kernels were not asked for");
        for (int r = 0; r < plain.Length; r++)
        {
            Assert.Equal(plain[r].Losses, kernels[r].Losses);
            Assert.Equal(plain[r].Norms, kernels[r].Norms);
            foreach (var (name, w) in plain[r].Weights) Assert.Equal(w, kernels[r].Weights[name]);
        }
    }
}
