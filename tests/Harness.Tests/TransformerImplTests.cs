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

    [Fact]
    public void TheFusedCrossEntropyReadsTheBf16LogitsOnceEachWay()
    {
        var (megatronForward, megatronBackward) = ComputeTime.OutputLayer(Model, Megatron, H100);
        var (forward, backward) = ComputeTime.OutputLayer(Model, Executor, H100);
        // Megatron: 5 fp32 passes forward, 3 backward (20 and 12 B per logit); the executor's kernel: 2 B forward, 2 + 2 B backward.
        Exact(Logits * (20 - 2) / Hbm, megatronForward - forward);
        Exact(Logits * (12 - 4) / Hbm, megatronBackward - backward);
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
        Assert.Equal(ComputeTime.OutputLayer(Model, d with { Implementation = TransformerImpl.TransformerEngine }, H100), ComputeTime.OutputLayer(Model, d, H100));
    }

    [Fact]
    public void TheFusedQkvRotaryKernelMovesAllOfQkvOnce()
    {
        // Transformer Engine rotates Q and K: 2·2·(512 + 128) B per token; the executor's kernel reads and writes Q, K and V:
        // 2·2·(512 + 2·128). The difference is 2·2·128 B per token, 2048 tokens.
        double megatron = ComputeTime.Layer(Model, Megatron, H100).ElementwiseForward;
        double executor = ComputeTime.Layer(Model, Executor, H100).ElementwiseForward;
        Exact(2048 * 2 * 2 * 128 / Hbm, executor - megatron);
        // Under context parallelism the kernel does not run (positions are not 0..s-1): libtorch rotates Q and K as Megatron does.
        var cp = Megatron with { ContextParallel = 2 };
        Exact(ComputeTime.Layer(Model, cp, H100).ElementwiseForward,
            ComputeTime.Layer(Model, cp with { Implementation = TransformerImpl.Harness }, H100).ElementwiseForward);
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
}
