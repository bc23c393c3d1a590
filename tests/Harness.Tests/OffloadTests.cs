using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Tests;

/// <summary>Megatron-Kwai's offload selection (offload.py) on Figure 7's configuration: Llama-65B, s 8192, t2 c2, SP,
/// two layers per chunk, PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:21.</summary>
public class OffloadTests
{
    private const double MiB = 1 << 20;
    private static readonly ModelSpec Llama65b = ModelPresets.All["llama-65b"] with { SeqLength = 8192 };

    private static RunDescription Config(double alpha, RecomputeSpec recompute, int? maxSplit = 21) => new(
        TensorParallel: 2, ContextParallel: 2, PipelineParallel: 8, DataParallel: 8, LayersPerVirtualStage: 2,
        SequenceParallel: true, GlobalBatch: 256, Recompute: recompute, OffloadRatio: alpha, ZeroStage: 1,
        MaxSplitSizeMb: maxSplit, Precision: Precision.Bf16, FusedSwiGlu: false); // Megatron-Kwai's SwiGLU is unfused

    private static ChunkOffload Chunk(RunDescription c)
    {
        Span<LayerTensor> tensors = stackalloc LayerTensor[Activations.MaxLayerTensors];
        tensors = tensors[..Activations.LayerTensors(Llama65b, c, tensors)];
        return Offload.Chunk(tensors, c, 2, 2 * Activations.Layer(Llama65b, c, tensors).Saved);
    }

    [Fact]
    public void LayerTensorsAddUpToTheLayer()
    {
        var c = Config(0.5, RecomputeSpec.Kwai);
        Span<LayerTensor> tensors = stackalloc LayerTensor[Activations.MaxLayerTensors];
        int n = Activations.LayerTensors(Llama65b, c, tensors);
        double kept = 0;
        foreach (var t in tensors[..n]) kept += t.Kept ? t.Bytes : 0;
        Assert.Equal(Activations.Layer(Llama65b, c).Saved, kept);
    }

    /// <summary>Under full recomputation the cut is alpha of the chunk's saved bytes rounded up to a MiB, never more than the
    /// chunk holds: 10.5 MiB at alpha 0.5 offloads 6 MiB (5.25 rounded up), at alpha 1 the 10.5 MiB, not 11.</summary>
    [Fact]
    public void AFullyRecomputedChunksCutIsRoundedUpToAMiBAndCappedAtTheChunk()
    {
        var full = RecomputeSpec.FullUniform();
        Assert.Equal(6 * MiB, Offload.Chunk([], Config(0.5, full), 2, 10.5 * MiB).Offloaded);
        var whole = Offload.Chunk([], Config(1, full), 2, 10.5 * MiB);
        Assert.Equal(10.5 * MiB, whole.Offloaded);
        Assert.Equal(10.5 * MiB, whole.Recorded);
    }

    [Fact]
    public void OffloadsAlphaOfTheLargeTensorsRoundedUpToAMiB()
    {
        // Kwai's recompute keeps, per layer, the norm inputs, Q, context (32 MiB each), the [K; V] shard (64 MiB) and the
        // FC1 output (172 MiB); the 0.5 MiB log-sum-exp stays. 728 MiB per chunk; 0.7 of it is 509.6 MiB -> 510 MiB.
        Assert.Equal(510 * MiB, Chunk(Config(0.7, RecomputeSpec.Kwai)).Offloaded);
    }

    [Fact]
    public void TheSplitTensorsTailTakesTheNextCachedBlockUpTo20MiBLarger()
    {
        // Above 0.5 the order is smallest first: 8 x 32, 2 x 64 (384 MiB), then the FC1 outputs. At 0.7 the first FC1
        // output splits at 126 MiB; its 46 MiB tail is cloned into a cached 64 MiB block: 18 MiB stranded.
        Assert.Equal(18 * MiB, Chunk(Config(0.7, RecomputeSpec.Kwai)).Stranded);
        // At 0.8 (583 MiB) the second FC1 output splits at 27 MiB: no cached block within 20 MiB of the 145 MiB tail,
        // a new segment rounded up to 2 MiB.
        Assert.Equal(1 * MiB, Chunk(Config(0.8, RecomputeSpec.Kwai)).Stranded);
        // Without recompute at 0.8 (960 of 1200 MiB) a SiLU output or product splits; its 68 MiB tail takes an 86 MiB block.
        Assert.Equal(18 * MiB, Chunk(Config(0.8, RecomputeSpec.None)).Stranded);
    }

    [Fact]
    public void PyTorchsDefaultAllocatorSplitsTheBlockToSize() =>
        Assert.Equal(0, Chunk(Config(0.7, RecomputeSpec.Kwai, maxSplit: null)).Stranded);

    [Fact]
    public void NothingIsSplitOnATensorBoundary()
    {
        // Without recompute at 0.5 (600 of 1200 MiB): 4 x 86, 64 and 64 and four 32 MiB tensors, largest first.
        var o = Chunk(Config(0.5, RecomputeSpec.None));
        Assert.Equal(600 * MiB, o.Offloaded);
        Assert.Equal(0, o.Stranded);
    }
}
