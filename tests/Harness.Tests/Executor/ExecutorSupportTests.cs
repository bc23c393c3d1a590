using Harness.Executor.Fused;
using Harness.Executor.Training;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>What of a run description the executor runs: refused fields as one sentence naming the flag each, and the
/// description as run, with a note per field the executor changed.</summary>
public class ExecutorSupportTests
{
    [Fact]
    public void MegatronsDefaultsAndWhatTheExecutorImplementsAreNotRefused()
    {
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription()));
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription(DataParallel: 2, TensorParallel: 2, PipelineParallel: 2, LayersPerVirtualStage: 1,
            ContextParallel: 2, SequenceParallel: true, Recompute: new RecomputeSpec(RecomputeGranularity.Full, RecomputeMethod.Block, 2), ZeroStage: 1,
            Overlap: new OverlapSpec(GradientReduce: true, ParamGather: true), Precision: Precision.Fp32, ContextParallelComm: ContextParallelCommType.AllGather,
            FusedKernels: false, GradientAccumulationFusion: false, DdpBucketSize: 1000)));
        // ZeRO 2 and 3 (DeepSpeed's), under tensor, context and sequence parallelism.
        foreach (int stage in new[] { 2, 3 })
            Assert.Empty(ExecutorSupport.Refusals(new RunDescription(DataParallel: 2, TensorParallel: 2, ContextParallel: 2, SequenceParallel: true, ZeroStage: stage,
                Overlap: new OverlapSpec(GradientReduce: true, ParamGather: true))));
        // Megatron-Kwai's recomputation, alone and beside selective.
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription(Recompute: RecomputeSpec.Kwai)));
        // fp16 with fp32 main gradients (the loss scaler is RunSettings', not the description's).
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription(DataParallel: 2, ZeroStage: 1, Precision: Precision.Fp16, GradientsInFp32: true)));
        // 16-bit main gradients: --fp16 alone (Megatron's default), --grad-reduce-in-bf16 (MainGradDtypeTests).
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription(DataParallel: 2, ZeroStage: 1, Precision: Precision.Fp16, GradientsInFp32: false)));
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription(DataParallel: 2, ZeroStage: 3, Precision: Precision.Bf16, GradientsInFp32: false)));
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription(TensorParallel: 2, SequenceParallel: true, Recompute: RecomputeSpec.Selective with { NormOutputs = true, MlpActivation = true })));
        // Megatron-Kwai's activation offload (ActivationOffloadTests).
        Assert.Empty(ExecutorSupport.Refusals(new RunDescription(PipelineParallel: 4, LayersPerVirtualStage: 1, OffloadRatio: 0.5)));
    }

    [Fact]
    public void EachFieldItDoesNotRunIsOneSentenceNamingTheFlag()
    {
        string Refused(RunDescription d) => Assert.Single(ExecutorSupport.Refusals(d));
        var d = new RunDescription();
        Assert.StartsWith("--tp-comm-overlap ", Refused(d with { Overlap = new OverlapSpec(TensorParallelComm: true) }));
        Assert.StartsWith("--overlap-sp-ag and --overlap-sp-rs ", Refused(d with { Overlap = new OverlapSpec(TensorParallelComm: true, TensorParallelForwardReduceScatter: false) }));
        // The executor's checks include them, beside the description's own.
        var errors = TrainingRun.Check(Reference(), d with { Overlap = new OverlapSpec(TensorParallelComm: true), Precision = Precision.Fp32 }, new RunSettings(MockData: true), 1);
        Assert.Contains(errors, e => e.StartsWith("--tp-comm-overlap "));
    }

    private static ModelSpec Reference() => Parallel.Reference.Gpt();

    [Fact]
    public void KwaiRecomputeRunsUnderTheSimulatorsRules()
    {
        // RunDescription.Validate's rules hold for runs: not with full recomputation, SwiGLU for the activation one, sequence
        // parallelism for the norm one under tensor parallelism.
        var settings = new RunSettings(MockData: true);
        var d = new RunDescription(MicroBatch: 1, GlobalBatch: 2, Precision: Precision.Fp32);
        Assert.Empty(TrainingRun.Check(Parallel.Reference.Llama(), d with { Recompute = RecomputeSpec.Selective with { NormOutputs = true, MlpActivation = true } }, settings, 1));
        Assert.Empty(TrainingRun.Check(Parallel.Reference.Gpt(), d with { TensorParallel = 2, SequenceParallel = true, Recompute = new RecomputeSpec(NormOutputs: true) }, settings, 2));
        Assert.Contains("Megatron-Kwai's norm/activation recompute cannot be combined with full recomputation.",
            TrainingRun.Check(Parallel.Reference.Llama(), d with { Recompute = RecomputeSpec.FullUniform() with { NormOutputs = true } }, settings, 1));
        Assert.Contains("--kaimm-recompute-mlp-activation-func needs a SwiGLU model (--swiglu).",
            TrainingRun.Check(Parallel.Reference.Gpt(), d with { Recompute = new RecomputeSpec(MlpActivation: true) }, settings, 1));
        Assert.Contains("--kaimm-recompute-norm needs --sequence-parallel when tensor parallelism is on.",
            TrainingRun.Check(Parallel.Reference.Llama(), d with { TensorParallel = 2, Recompute = new RecomputeSpec(NormOutputs: true) }, settings, 2));
    }

    [Fact]
    public void OnCpuTheDescriptionAsRunHasWhatRanAndANotePerChange()
    {
        var d = new RunDescription(TensorParallel: 2, PipelineParallel: 2, ContextParallel: 2, MicroBatch: 1, GlobalBatch: 1, Precision: Precision.Fp32);
        var (asRun, notes) = ExecutorSupport.AsRun(d, ExecutionDevice.Cpu, new Fusions(Kernels: true, GradientAccumulation: false, [], AttentionBackend.Flash), deviceMaxConnections: null);
        var overlap = asRun.OverlapOrDefault;
        Assert.False(overlap.PipelineP2p);
        Assert.False(overlap.TensorParallelBackwardAsync);
        Assert.False(overlap.ContextParallelComm);
        Assert.False(asRun.FusedKernels);
        Assert.False(asRun.GradientAccumulationFusion);
        Assert.Null(overlap.DeviceMaxConnections); // no GPU queues on CPU
        Assert.False(asRun.PipelineScatterGather);
        // Nothing else changed but the implementation, this executor (--transformer-impl harness), which every run records.
        Assert.Equal(d with { Overlap = asRun.Overlap, FusedKernels = false, GradientAccumulationFusion = false, FusedSwiGlu = false, PipelineScatterGather = false,
            Implementation = TransformerImpl.Harness, FusedGptKernels = false }, asRun);
        Assert.Collection(notes,
            n => Assert.StartsWith("pipeline p2p is not overlapped", n),
            n => Assert.StartsWith("every tensor-parallel rank sends the whole activation to the next pipeline stage", n),
            n => Assert.StartsWith("the column-parallel input-gradient all-reduce runs on the compute stream", n),
            n => Assert.StartsWith("ring attention passes each key/value block before computing on it", n),
            n => Assert.StartsWith("the executor's fused kernels are CUDA kernels; on CPU", n),
            n => Assert.StartsWith("SwiGLU ran as libtorch's chunk, silu and product", n),
            n => Assert.StartsWith("gradient-accumulation fusion has no bf16 weight gradients to fuse in fp32", n));
        // Ulysses' all-to-alls are on the critical path in Megatron too: the overlap switch is left as asked, with no note;
        // a2a+p2p's ring is not overlapped, as p2p's.
        var ulysses = new RunDescription(ContextParallel: 2, Precision: Precision.Fp32, ContextParallelComm: ContextParallelCommType.A2a,
            FusedKernels: false, GradientAccumulationFusion: false, FusedSwiGlu: false, Implementation: TransformerImpl.Harness, FusedGptKernels: false);
        var (ulyssesRan, ulyssesNotes) = ExecutorSupport.AsRun(ulysses, ExecutionDevice.Cpu, new Fusions(false, false, [], AttentionBackend.Flash), null);
        Assert.Equal(ulysses, ulyssesRan);
        Assert.Empty(ulyssesNotes);
        var hierarchical = ulysses with { ContextParallel = 4, ContextParallelComm = ContextParallelCommType.A2aP2p, HierarchicalAllToAllSize = 2 };
        var (hierarchicalRan, hierarchicalNotes) = ExecutorSupport.AsRun(hierarchical, ExecutionDevice.Cpu, new Fusions(false, false, [], AttentionBackend.Flash), null);
        Assert.False(hierarchicalRan.OverlapOrDefault.ContextParallelComm);
        Assert.StartsWith("ring attention passes each key/value block before computing on it", Assert.Single(hierarchicalNotes));
        // One rank, nothing asked for that does not run: no note.
        var serial = new RunDescription(Precision: Precision.Fp32, FusedKernels: false, GradientAccumulationFusion: false, FusedSwiGlu: false, Implementation: TransformerImpl.Harness,
            FusedGptKernels: false);
        var (same, none) = ExecutorSupport.AsRun(serial, ExecutionDevice.Cpu, new Fusions(false, false, [], AttentionBackend.Flash), null);
        Assert.Equal(serial, same);
        Assert.Empty(none);
    }

    [Fact]
    public void OnAGpuTheQueuesAreTheEnvironmentsAndKernelsThatApplyNowhereAreNoted()
    {
        // Tensor parallelism: Megatron wants one hardware queue; the process has CUDA's default 8 (unset).
        var d = new RunDescription(TensorParallel: 2, ContextParallel: 2, MicroBatch: 1, GlobalBatch: 1);
        var probe = "fused kernels off, libtorch's operators run instead: no NVRTC.";
        var (asRun, notes) = ExecutorSupport.AsRun(d, ExecutionDevice.Cuda, new Fusions(Kernels: true, GradientAccumulation: true, [probe], AttentionBackend.Flash), deviceMaxConnections: null);
        Assert.Equal(8, asRun.OverlapOrDefault.DeviceMaxConnections);
        Assert.Contains(notes, n => n.StartsWith("CUDA_DEVICE_MAX_CONNECTIONS is 8 in this process (unset: CUDA's default), not the description's 1"));
        Assert.Contains(probe, notes);
        Assert.Contains(notes, n => n.StartsWith("the fused cross-entropy runs over an unsplit vocabulary only"));
        Assert.Contains(notes, n => n.StartsWith("the fused QKV split with rotary positions does not run under context parallelism"));
        Assert.True(asRun.FusedKernels && asRun.GradientAccumulationFusion);
        // As the description asks: no note on the queues.
        var (_, agreeing) = ExecutorSupport.AsRun(d with { ContextParallel = 1 }, ExecutionDevice.Cuda, new Fusions(false, true, [], AttentionBackend.Flash), deviceMaxConnections: 1);
        Assert.DoesNotContain(agreeing, n => n.StartsWith("CUDA_DEVICE_MAX_CONNECTIONS"));
    }

    /// <summary>The allocator settings are the process's PYTORCH_CUDA_ALLOC_CONF on a GPU (harness run sets it from the
    /// description), and none on a CPU.</summary>
    [Fact]
    public void TheAllocatorSettingsAreTheEnvironmentsOnAGpuAndNoneOnACpu()
    {
        var d = new RunDescription(ExpandableSegments: true);
        Assert.Equal("expandable_segments:True", AllocatorConf.For(d));
        Assert.Equal("max_split_size_mb:21", AllocatorConf.For(new RunDescription(MaxSplitSizeMb: 21)));
        Assert.Null(AllocatorConf.For(new RunDescription()));
        var none = new Fusions(false, false, [], AttentionBackend.Flash);
        var (same, quiet) = ExecutorSupport.AsRun(d, ExecutionDevice.Cuda, none, null, "expandable_segments:True,garbage_collection_threshold:0.6");
        Assert.True(same.ExpandableSegments);
        Assert.DoesNotContain(quiet, n => n.StartsWith(AllocatorConf.Variable));
        var (split, noted) = ExecutorSupport.AsRun(d, ExecutionDevice.Cuda, none, null, "max_split_size_mb:64");
        Assert.Equal((false, 64), (split.ExpandableSegments, split.MaxSplitSizeMb));
        Assert.Contains(noted, n => n.StartsWith("PYTORCH_CUDA_ALLOC_CONF is 'max_split_size_mb:64' in this process, not the description's 'expandable_segments:True'"));
        var (cpu, cpuNotes) = ExecutorSupport.AsRun(d, ExecutionDevice.Cpu, none, null, "expandable_segments:True");
        Assert.False(cpu.ExpandableSegments);
        Assert.Contains(cpuNotes, n => n.StartsWith("--expandable-segments and --max-split-size-mb set the CUDA caching allocator"));
    }
}
