using Harness.Executor.Fused;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>
/// What of a <see cref="RunDescription"/> this executor runs, in one place. A field it does not implement is refused, in one
/// sentence naming the flag (<see cref="Refusals"/>), never ignored. Where it runs an implementation detail otherwise and
/// refusing would refuse Megatron's defaults (pipeline p2p not overlapped, the column-parallel input-gradient all-reduce
/// on the compute stream, the environment's CUDA_DEVICE_MAX_CONNECTIONS, a fusion that does not apply on this device or
/// rank), the run's record holds the description as run, with a note per change (<see cref="AsRun"/>), so that
/// `harness validate` simulates what ran. Runs as described, so recorded as given: 16-bit main gradients
/// (Optimizer.ParamAndGradBuffer), the precision-aware optimizer's states (Optimizer.PrecisionAwareStates), --no-norm-fusion
/// and --no-bias-gelu-fusion with its two companions (Transformer.Norms, Transformer.Mlp.BiasGelu; the masked softmax and
/// bias-dropout-add are the same arithmetic fused or not, libtorch's operators here either way).
/// </summary>
public static class ExecutorSupport
{
    /// <summary>Every field of <paramref name="d"/> the executor does not run, as sentences naming the flag; empty when it runs all.</summary>
    public static IReadOnlyList<string> Refusals(RunDescription d)
    {
        var refused = new List<string>();
        var overlap = d.OverlapOrDefault;
        if (overlap.TensorParallelComm)
            refused.Add(overlap.TensorParallelForwardReduceScatter
                ? "--tp-comm-overlap is not run by the executor yet."
                : "--overlap-sp-ag and --overlap-sp-rs (Megatron-Kwai) are not run by the executor yet.");
        return refused;
    }

    /// <summary>libtorch's type for the parameters and activations of a precision.</summary>
    public static ScalarType ComputeDtype(Precision precision) => precision switch
    {
        Precision.Bf16 => ScalarType.BFloat16,
        Precision.Fp16 => ScalarType.Float16,
        _ => ScalarType.Float32,
    };

    /// <summary>
    /// <paramref name="d"/> as the executor ran it on <paramref name="device"/> with <paramref name="fusions"/> (resolved
    /// there), and one note per field it changed, saying why. <paramref name="deviceMaxConnections"/>: the process's
    /// CUDA_DEVICE_MAX_CONNECTIONS on a GPU (null: unset, CUDA's default).
    /// </summary>
    public static (RunDescription AsRun, IReadOnlyList<string> Notes) AsRun(RunDescription d, ExecutionDevice device, Fusions fusions, int? deviceMaxConnections,
        string? allocatorConf = null)
    {
        var notes = new List<string>();
        var overlap = d.OverlapOrDefault;
        if (d.PipelineParallel > 1 && overlap.PipelineP2p)
        {
            overlap = overlap with { PipelineP2p = false };
            notes.Add("pipeline p2p is not overlapped with compute: each send goes out grouped with the next receive and is waited for (P2PCommunication).");
        }
        bool scatterGather = d.PipelineScatterGather;
        if (d.PipelineParallel > 1 && d.TensorParallel > 1 && !d.SequenceParallel && scatterGather)
        {
            scatterGather = false;
            notes.Add("every tensor-parallel rank sends the whole activation to the next pipeline stage (--no-scatter-gather-tensors-in-pipeline), not Megatron's 1/t slice all-gathered by the receivers.");
        }
        if (d.TensorParallel > 1 && overlap.TensorParallelBackwardAsync)
        {
            overlap = overlap with { TensorParallelBackwardAsync = false };
            notes.Add("the column-parallel input-gradient all-reduce runs on the compute stream, not behind the weight-gradient GEMM (Megatron's asynchronous all-reduce).");
        }
        // Ulysses' all-to-alls are on the critical path in Megatron too: the switch does not apply to them.
        if (d.ContextParallel > 1 && overlap.ContextParallelComm && d.ContextParallelComm != ContextParallelCommType.A2a)
        {
            overlap = overlap with { ContextParallelComm = false };
            notes.Add(d.ContextParallelComm is ContextParallelCommType.P2p or ContextParallelCommType.A2aP2p
                ? "ring attention passes each key/value block before computing on it: the exchange is not overlapped with attention."
                : "the context-parallel key/value all-gather and its gradients' reduce-scatter run on the critical path, not behind the QKV GEMM.");
        }
        if (device == ExecutionDevice.Cuda)
        {
            int queues = deviceMaxConnections ?? OverlapSpec.CudaDefaultConnections;
            if (queues != d.DeviceMaxConnections)
                notes.Add($"CUDA_DEVICE_MAX_CONNECTIONS is {queues} in this process{(deviceMaxConnections is null ? " (unset: CUDA's default)" : "")}, " +
                          $"not the description's {d.DeviceMaxConnections}; the executor takes it from the environment.");
            overlap = overlap with { DeviceMaxConnections = queues };
        }
        // On CPU the kernels' call sites run libtorch's operators (Fusions.Resolve): none of them ran.
        // The caching allocator's settings: the process's PYTORCH_CUDA_ALLOC_CONF on a GPU (harness run sets it from the
        // description); on a CPU there is no caching allocator.
        var allocator = AllocatorConf.Apply(d, device == ExecutionDevice.Cuda ? allocatorConf : null);
        if (allocator.ExpandableSegments != d.ExpandableSegments || allocator.MaxSplitSizeMb != d.MaxSplitSizeMb)
            notes.Add(device == ExecutionDevice.Cuda
                ? $"{AllocatorConf.Variable} is '{allocatorConf}' in this process, not the description's '{AllocatorConf.For(d)}'; the allocator takes it from the environment."
                : "--expandable-segments and --max-split-size-mb set the CUDA caching allocator; a CPU run has none.");
        bool kernelsRan = fusions.Kernels && device == ExecutionDevice.Cuda;
        var asRun = d with
        {
            Overlap = overlap == d.OverlapOrDefault ? d.Overlap : overlap, FusedKernels = kernelsRan, GradientAccumulationFusion = fusions.GradientAccumulation,
            AttentionBackend = fusions.Attention, Implementation = TransformerImpl.Harness,
            // The fused SwiGLU kernel runs on bf16 GPU tensors only (FusedKernels.Applies); elsewhere libtorch's chunk, silu and
            // product run, which keep what Megatron's --no-bias-swiglu-fusion keeps.
            FusedSwiGlu = d.FusedSwiGlu && kernelsRan && d.Precision == Precision.Bf16,
            // Likewise the GPT path's kernels (GptKernels), where their own module compiled (Fusions.GptKernels).
            FusedGptKernels = d.FusedGptKernels && kernelsRan && fusions.GptKernels && d.Precision == Precision.Bf16,
            ExpandableSegments = allocator.ExpandableSegments, MaxSplitSizeMb = allocator.MaxSplitSizeMb, PipelineScatterGather = scatterGather,
        };
        notes.AddRange(fusions.Notes);
        if (d.FusedKernels && device == ExecutionDevice.Cpu)
            notes.Add("the executor's fused kernels are CUDA kernels; on CPU libtorch's operators run.");
        if (d.FusedSwiGlu && !asRun.FusedSwiGlu)
            notes.Add("SwiGLU ran as libtorch's chunk, silu and product, which keep SiLU's output (--no-bias-swiglu-fusion): the fused SwiGLU kernel runs on bf16 GPU tensors with the executor's fused kernels.");
        if (d.FusedGptKernels && kernelsRan && d.Precision != Precision.Bf16)
            notes.Add("the GPT path's fused kernels (residual add + LayerNorm, embedding + positions) are bf16 kernels: libtorch's operators ran them.");
        // The residual add fused with the MLP's norm (LayerNorm's in the GPT path's kernels, RMSNorm's in the Llama path's).
        if (kernelsRan && !d.FusedNorm)
            notes.Add("under --no-norm-fusion the residual adds and norms are libtorch's operators (the legacy float32 norm); the other fused kernels run.");
        if (kernelsRan && d.RecomputeOrNone.NormOutputs)
            notes.Add("under --kaimm-recompute-norm the norms run inside the linears after them, so the residual adds and norms are libtorch's operators; the other fused kernels run.");
        if (kernelsRan && d.TensorParallel > 1)
            notes.Add("the fused cross-entropy runs over an unsplit vocabulary only; with tensor parallelism the vocabulary-parallel cross-entropy of libtorch's operators runs.");
        if (kernelsRan && d.ContextParallel > 1)
            notes.Add("the fused QKV split with rotary positions does not run under context parallelism (its tokens' positions are not 0..s-1); libtorch's operators run.");
        if (kernelsRan && d.AdamOrDefault.PrecisionAware)
            notes.Add("the fused AdamW kernel reads float32 states: under --use-precision-aware-optimizer libtorch's operators update Transformer Engine's stored states.");
        if (d.ZeroStage >= 3 && d.Fsdp is null)
            notes.Add("ZeRO 3 partitions the weight matrices; the norms and biases stay whole on every rank, as DeepSpeed keeps parameters below stage3_param_persistence_threshold resident.");
        if (d.ZeroStage >= 3 && d.Fsdp is not null)
            notes.Add("optim_grads_params runs on the ZeRO 3 machinery: the weight matrices are partitioned and gathered one layer a unit, the embeddings and output layer around their use in each micro-batch (Megatron-FSDP keeps them gathered through the step), and the norms and biases stay whole on every rank (Megatron-FSDP shards them too); the values are the same.");
        if (d.GradientAccumulationFusion && !fusions.GradientAccumulation && d.Precision == Precision.Fp32 && d.ZeroStage < 2)
            notes.Add("gradient-accumulation fusion has no bf16 weight gradients to fuse in fp32: autograd adds each micro-batch's fp32 weight gradients to the main gradients.");
        return (asRun, notes);
    }
}
