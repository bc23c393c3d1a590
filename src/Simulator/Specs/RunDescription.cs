namespace Harness.Simulator.Specs;

/// <summary>Megatron's --recompute-granularity.</summary>
public enum RecomputeGranularity
{
    /// <summary>Keep every activation autograd saves.</summary>
    None,
    /// <summary>Megatron's selective recompute: the core attention (softmax, dropout, QK^T·V) is recomputed.</summary>
    Selective,
    /// <summary>Whole layers recomputed from their input (see <see cref="RecomputeMethod"/>).</summary>
    Full,
}

/// <summary>Megatron's --recompute-method for full recomputation.</summary>
public enum RecomputeMethod
{
    /// <summary>Layers split into groups of num-layers; each group's input is kept, the rest recomputed.</summary>
    Uniform,
    /// <summary>The first num-layers layers of each pipeline stage are recomputed, the others keep everything.</summary>
    Block,
}

/// <summary>
/// Activation recomputation. <see cref="NormOutputs"/> and <see cref="MlpActivation"/> are Megatron-Kwai's
/// --kaimm-recompute-norm and --kaimm-recompute-mlp-activation-func: drop and recompute the norm outputs and
/// the SwiGLU output, keeping every GEMM output and the flash-attention state.
/// </summary>
public sealed record RecomputeSpec(
    RecomputeGranularity Granularity = RecomputeGranularity.None,
    RecomputeMethod Method = RecomputeMethod.Uniform,
    int NumLayers = 1,
    bool NormOutputs = false,
    bool MlpActivation = false)
{
    public static RecomputeSpec None { get; } = new();
    public static RecomputeSpec Selective { get; } = new(RecomputeGranularity.Selective);
    public static RecomputeSpec FullUniform(int numLayers = 1) => new(RecomputeGranularity.Full, RecomputeMethod.Uniform, numLayers);
    /// <summary>Megatron-Kwai's "ckpt=ours": norm outputs and SwiGLU output.</summary>
    public static RecomputeSpec Kwai { get; } = new(NormOutputs: true, MlpActivation: true);
}

/// <summary>Overlap switches: TP communication with GEMMs, DP gradient reduction with backward, pipeline p2p with compute.</summary>
/// <param name="TensorParallelBackwardAsync">Megatron's asynchronous all-reduce (or reduce-scatter) of the column-parallel
/// input gradient behind the weight-gradient GEMM (since late 2021); Megatron-LM of 2019-2021 ran it on the compute stream.</param>
/// <param name="TensorParallelForwardReduceScatter">With <paramref name="TensorParallelComm"/>, whether the forward
/// reduce-scatter after the row-parallel GEMMs (attention output projection, MLP second linear) is overlapped too.
/// Transformer Engine's userbuffers (--tp-comm-overlap) split the GEMM and reduce-scatter each chunk as it finishes.
/// Megatron-Kwai's --overlap-sp-ag --overlap-sp-rs (ATC'24 artifact, branch atc24ae) overlap only the all-gathers in
/// forward: its row-parallel linears get all-gather userbuffers (transformer.py: "hacked, should be reduce_scatter,
/// coupled with layers.py") and layers.py runs their GEMM whole, then a NCCL reduce-scatter on the compute stream.</param>
/// <param name="DeviceMaxConnections">The processes' CUDA_DEVICE_MAX_CONNECTIONS: how many hardware work queues feed the GPU
/// (CUDA's default 8). Megatron-LM (2022 to early 2024, arguments.py) refuses to start with sequence parallelism or the
/// asynchronous TP all-reduce unless it is 1, so that a communication kernel launched before a GEMM is scheduled before
/// it; null means that rule: 1 with tensor parallelism, else 8. With one queue, every stream's work enters the GPU in
/// launch order, and kernels launched after a NCCL operation on a side stream wait for it to finish even when they do
/// not depend on it (traced for data-parallel reduce-scatters: alibaba/Megatron-LLaMA issues 26 and 43; for
/// pipeline p2p: NVIDIA/nccl issue 2238). Megatron's TP and CP overlaps are built for that (the collective is launched
/// just before the one GEMM or attention kernel it hides behind); a pipeline p2p transfer is not: it waits for its peer
/// and spans whole model chunks, so under one queue --overlap-p2p-communication hides nothing
/// (<see cref="RunDescription.PipelineP2pHidden"/>).</param>
/// <param name="ContextParallelComm">Whether the context-parallel exchange of keys and values hides behind compute: Megatron's
/// and Transformer Engine's ring overlaps each step with attention, Megatron-Kwai's all-gather with the QKV GEMM
/// (layers.py splits it into its V, K and Q parts). Megatron-Kwai's --no-context-parallel-comm-overlap-gemm, which its
/// ATC'24 launch script passes for grouped-query attention (pretrain_llama.sh, GQA_ARGS; the split assumes Q, K and V of
/// one size), runs the all-gather of K and V in forward and the reduce-scatter of their gradients in backward
/// synchronously (dattention.py), exposed; the asynchronous re-gather of the saved K/V shard in backward still hides.
/// Ulysses' all-to-alls (--cp-comm-type a2a) are exposed either way.</param>
/// <param name="GradientReduce">Megatron's --overlap-grad-reduce (off unless given): gradient buckets reduced during the last
/// micro-batch's backward; with ZeRO 2 and 3, DeepSpeed's overlap_comm: during every micro-batch's backward.</param>
/// <param name="ParamGather">Megatron's --overlap-param-gather (off unless given; with the distributed optimizer): each bucket's
/// updated weights all-gathered during the next forward, just before its first layer needs them.</param>
public sealed record OverlapSpec(bool TensorParallelComm = false, bool GradientReduce = false, bool PipelineP2p = true,
    bool TensorParallelBackwardAsync = true, bool TensorParallelForwardReduceScatter = true, int? DeviceMaxConnections = null,
    bool ContextParallelComm = true, bool ParamGather = false)
{
    /// <summary>CUDA's default number of hardware work queues per device.</summary>
    public const int CudaDefaultConnections = 8;

    public static OverlapSpec Default { get; } = new();
}

/// <summary>Megatron's --optimizer: the update rule, which decides the states the optimizer keeps per parameter.</summary>
public enum OptimizerType
{
    /// <summary>Adam with decoupled weight decay (Megatron's default; Transformer Engine's FusedAdam): two moments.</summary>
    Adam,
    /// <summary>SGD with heavy-ball momentum and L2 weight decay, as torch.optim.SGD (and Transformer Engine's FusedSGD) runs
    /// it for Megatron (megatron/core/optimizer/__init__.py): one momentum buffer, none with momentum 0.</summary>
    Sgd,
}

/// <summary>Parameter and activation precision (--bf16 / --fp16, or neither: fp32).</summary>
public enum Precision { Bf16, Fp16, Fp32 }

/// <summary>How context-parallel ranks exchange keys and values (Megatron's --cp-comm-type).</summary>
public enum ContextParallelCommType
{
    /// <summary>Ring attention: key/value blocks passed around the ring, each step overlapped with an attention block
    /// (Megatron's default; Transformer Engine's AttnFuncWithCPAndKVP2P).</summary>
    P2p,
    /// <summary>Every rank's keys and values all-gathered before attention and their gradients reduce-scattered after it,
    /// on the critical path (Transformer Engine's AttnFuncWithCPAndKVAllGather).</summary>
    AllGather,
    /// <summary>DeepSpeed-Ulysses (Jacobs et al. 2023, arXiv 2309.14509): queries, keys and values all-to-all from
    /// sequence-sharded to head-sharded before attention, which then sees the whole sequence for 1/c of the heads and
    /// query groups, and its output all-to-all back; backward in reverse. Four all-to-alls each way per layer, on the
    /// critical path (Transformer Engine's AttnFuncWithCPAndQKVOA2A waits for them before attention).</summary>
    A2a,
    /// <summary>Hierarchical: Ulysses' all-to-alls inside groups of consecutive context-parallel ranks (the first of
    /// --hierarchical-context-parallel-sizes, meant for NVLink), then ring attention across the groups (the second) on the
    /// heads the all-to-all left each rank (Transformer Engine's AttnFuncWithCPAndKVP2P with a list of two groups).</summary>
    A2aP2p,
}

/// <summary>
/// One hybrid-parallel training configuration, in Megatron-LM's terms. World size = dp·tp·pp·cp.
/// </summary>
/// <param name="LayersPerVirtualStage">Megatron's --num-layers-per-virtual-pipeline-stage; null means no interleaving.</param>
/// <param name="OffloadRatio">Megatron-Kwai's alpha: fraction of saved activations offloaded to host memory.</param>
/// <param name="ZeroStage">0: replicated optimizer; 1: optimizer states sharded (Megatron's distributed optimizer);
/// 2: plus gradients; 3: plus parameters (stages 2 and 3 as DeepSpeed runs them, without pipeline parallelism; under
/// <paramref name="Fsdp"/> the stage of Megatron-FSDP's sharding strategy).</param>
/// <param name="SyncFactor">CAAT-Net's p: the fraction of hidden channels all-reduced after row-parallel linears.</param>
/// <param name="FusedElementwise">Megatron's bias-GeLU, bias-dropout-add and scale-mask-softmax fusions (2020 on); false: the
/// separate PyTorch kernels of Megatron-LM 2019.</param>
/// <param name="FusedSwiGlu">Megatron's --bias-swiglu-fusion (on unless --no-bias-swiglu-fusion, since early 2024): SwiGLU as one
/// kernel each way (megatron/core/fusions/fused_bias_swiglu.py, SwiGLUFunction) that keeps only its input, FC1's output, and
/// recomputes the activation in backward; false: torch.chunk, silu and a product (Megatron-LM through 2023, Megatron-Kwai),
/// which keep SiLU's output too and make two more passes over the activations.</param>
/// <param name="FusedNorm">LayerNorm/RMSNorm as one fused kernel (Apex, Transformer Engine); false: PyTorch ops in fp32,
/// as Megatron-LM's legacy RMSNorm ran them in early 2024.</param>
/// <param name="GradientsInFp32">Megatron's --accumulate-allreduce-grads-in-fp32: main gradients kept and reduced in
/// fp32 (Megatron turns it on with bf16 unless --grad-reduce-in-bf16 or the precision-aware optimizer's --main-grads-dtype
/// bf16); Megatron-LM 2019-2021 fp16 runs kept and all-reduced fp16 gradients.</param>
/// <param name="ExpandableSegments">PyTorch's PYTORCH_CUDA_ALLOC_CONF expandable_segments:True: the caching allocator grows one
/// segment per stream by mapping pages, so freed memory is not stranded (<see cref="Costs.MemoryBudget.Fragmentation"/>).</param>
/// <param name="PipelineScatterGather">Megatron-LM's scatter/gather of pipeline p2p tensors without sequence parallelism
/// (on unless --no-scatter-gather-tensors-in-pipeline, 2021 to 2026; Narayanan et al. 2021, section 4.1): each tensor-parallel
/// rank sends a 1/t slice, the receivers all-gather it over NVLink; false: every rank sends the whole activation, as DeepSpeed's
/// pipeline engine did.</param>
/// <param name="Adam">How Adam's master weights and moments are stored (<see cref="AdamStates"/>); null: fp32.</param>
/// <param name="Optimizer">Megatron's --optimizer.</param>
/// <param name="SgdMomentum">Megatron's --sgd-momentum (default 0.9), the momentum factor of SGD; 0 keeps no momentum buffer.</param>
/// <param name="GradientAccumulationFusion">Megatron's --gradient-accumulation-fusion (on unless --no-gradient-accumulation-fusion,
/// since late 2021): the weight-gradient GEMM accumulates into the main gradient in its epilogue; false: it writes a fresh
/// gradient and autograd adds it to the accumulated one every micro-batch after the first, as Megatron-LM 2019-2021 did.</param>
/// <param name="ContextParallelComm">Megatron's --cp-comm-type.</param>
/// <param name="AttentionBackend">Megatron-core's --attention-backend. The default is flash, what Megatron-LM's --use-flash-attn
/// launch lines (the reproduced runs') ran; Megatron-core's own default is auto (<see cref="AttentionKernels.Resolve"/>).</param>
/// <param name="HierarchicalAllToAllSize">The first of Megatron's --hierarchical-context-parallel-sizes under --cp-comm-type
/// a2a+p2p: how many consecutive context-parallel ranks exchange heads by all-to-all (the ring runs over c / it of
/// them); null for every other exchange.</param>
/// <param name="FusedKernels">The executor's own CUDA kernels (SwiGLU, QKV with rotary, residual add + RMSNorm,
/// cross-entropy, AdamW) in place of
/// libtorch's operator chains; Harness's --no-fused-kernels turns them off. The simulator costs them under
/// --transformer-impl harness (<see cref="Implementation"/>), Megatron's kernels otherwise.</param>
/// <param name="DdpBucketSize">Megatron's --ddp-bucket-size: elements per data-parallel gradient bucket; null: Megatron's
/// default, max(40M, 1M x data-parallel size). With ZeRO 2 and 3 it sets DeepSpeed's reduce_bucket_size (default 5e8).</param>
/// <param name="LayersInFirstPipelineStage">Megatron's --decoder-first-pipeline-num-layers (TransformerConfig's
/// num_layers_in_first_pipeline_stage): transformer layers on pipeline rank 0; null: an even split
/// (<see cref="LayersInChunk"/>).</param>
/// <param name="LayersInLastPipelineStage">Megatron's --decoder-last-pipeline-num-layers: layers on the last pipeline rank.</param>
/// <param name="AccountForEmbeddingInPipelineSplit">Megatron's --account-for-embedding-in-pipeline-split: the embedding
/// counts as a layer where the layers are split over the pipeline, so the first model chunk holds one layer fewer.</param>
/// <param name="AccountForLossInPipelineSplit">Megatron's --account-for-loss-in-pipeline-split: likewise the loss (with the
/// output layer), so the last model chunk holds one layer fewer.</param>
/// <param name="MaxSplitSizeMb">PyTorch's PYTORCH_CUDA_ALLOC_CONF max_split_size_mb: the caching allocator neither splits
/// cached blocks of at least this size nor serves smaller requests from them; null: PyTorch's default (no limit).
/// Megatron-Kwai's ATC'24 launch script sets 21.</param>
/// <param name="CpuOffloadingLayers">Megatron-core's --cpu-offloading-num-layers N (which turns on --cpu-offloading): the saved
/// activations of the first N layers copied to host memory during forward and back during backward (Transformer Engine's
/// cpu_offload_v1, through megatron/core/transformer/transformer_block.py); 0: off.</param>
/// <param name="Implementation">Megatron's --transformer-impl: whose kernels the costs describe (<see cref="TransformerImpl"/>);
/// a run of this project's executor records <see cref="TransformerImpl.Harness"/>.</param>
/// <param name="FusedGptKernels">The executor's own CUDA kernels for the GPT path (the residual add fused with the LayerNorm
/// after it, the word embedding with the learned positions added), a module of their own beside <see cref="FusedKernels"/>,
/// which they need; Harness's --no-fused-gpt-kernels turns them off. A run records whether they ran (false where they did not
/// compile, leaving the other kernels on); the simulator costs them under --transformer-impl harness.</param>
/// <param name="Fsdp">Megatron-core's --use-megatron-fsdp (<see cref="MegatronFsdp"/>), whose sharding strategy is
/// <paramref name="ZeroStage"/>; null: DeepSpeed's ZeRO stages (Megatron's distributed optimizer at stage 1).</param>
public sealed partial record RunDescription(
    int DataParallel = 1,
    int TensorParallel = 1,
    int PipelineParallel = 1,
    int? LayersPerVirtualStage = null,
    int ContextParallel = 1,
    bool SequenceParallel = false,
    int MicroBatch = 1,
    int GlobalBatch = 1,
    RecomputeSpec? Recompute = null,
    double OffloadRatio = 0,
    int ZeroStage = 0,
    double SyncFactor = 1.0,
    OverlapSpec? Overlap = null,
    Precision Precision = Precision.Fp32,
    AttentionBackend AttentionBackend = AttentionBackend.Flash,
    bool GradientsInFp32 = true,
    bool FusedNorm = true,
    bool FusedElementwise = true,
    bool GradientAccumulationFusion = true,
    int? MaxSplitSizeMb = null,
    ContextParallelCommType ContextParallelComm = ContextParallelCommType.P2p,
    bool FusedKernels = true,
    long? DdpBucketSize = null,
    bool FusedSwiGlu = true,
    AdamStates? Adam = null,
    bool ExpandableSegments = false,
    bool PipelineScatterGather = true,
    int? HierarchicalAllToAllSize = null,
    int? LayersInFirstPipelineStage = null,
    int? LayersInLastPipelineStage = null,
    bool AccountForEmbeddingInPipelineSplit = false,
    bool AccountForLossInPipelineSplit = false,
    int CpuOffloadingLayers = 0,
    OptimizerType Optimizer = OptimizerType.Adam,
    double SgdMomentum = 0.9,
    TransformerImpl Implementation = TransformerImpl.TransformerEngine,
    bool FusedGptKernels = true,
    MegatronFsdp? Fsdp = null)
{
    // Null stands for the default, so that a description equals another that spells the default out.
    public RecomputeSpec? Recompute { get; init; } = Recompute ?? RecomputeSpec.None;
    public OverlapSpec? Overlap { get; init; } = Overlap ?? OverlapSpec.Default;
    public AdamStates? Adam { get; init; } = Adam ?? AdamStates.Default;

    public AdamStates AdamOrDefault => Adam ?? AdamStates.Default;

    public RecomputeSpec RecomputeOrNone => Recompute ?? RecomputeSpec.None;
    /// <summary>The overlaps that run: as given, except that Megatron-FSDP's wrapper forces the gradient reduce's under
    /// optim_grads and optim_grads_params and the parameter gather's under optim_grads_params (megatron_fsdp.py, __init__).</summary>
    public OverlapSpec OverlapOrDefault => (Overlap ?? OverlapSpec.Default) is var o && Fsdp is not null
        ? o with { GradientReduce = ZeroStage >= 2 || o.GradientReduce, ParamGather = ZeroStage >= 3 || o.ParamGather }
        : o;

    /// <summary>Whether the data-parallel collectives come per transformer layer and micro-batch as Megatron-FSDP runs them
    /// (optim_grads and optim_grads_params), rather than by DeepSpeed's reduce buckets.</summary>
    public bool ShardsPerLayer => Fsdp is not null && ZeroStage >= 2;

    /// <summary>Whether the embeddings, final norm and output layer are gathered once a step and kept (Megatron-FSDP version
    /// 1, <see cref="MegatronFsdp.GathersEndsEveryMicroBatch"/>) rather than around each use.</summary>
    public bool KeepsEndsGathered => Fsdp is { GathersEndsEveryMicroBatch: false };

    /// <summary>CUDA_DEVICE_MAX_CONNECTIONS as given, else as Megatron-LM requires it (<see cref="OverlapSpec.DeviceMaxConnections"/>).</summary>
    public int DeviceMaxConnections => OverlapOrDefault.DeviceMaxConnections ?? (TensorParallel > 1 ? 1 : OverlapSpec.CudaDefaultConnections);

    /// <summary>Whether pipeline p2p transfers hide behind compute: --overlap-p2p-communication with more than one hardware
    /// work queue (under one, the kernels launched after a p2p wait for it: <see cref="OverlapSpec.DeviceMaxConnections"/>).</summary>
    public bool PipelineP2pHidden => OverlapOrDefault.PipelineP2p && DeviceMaxConnections > 1;

    /// <summary>Megatron's distributed optimizer is ZeRO stage 1.</summary>
    public bool DistributedOptimizer => ZeroStage >= 1;

    public int WorldSize => DataParallel * TensorParallel * PipelineParallel * ContextParallel;

    /// <summary>The context-parallel ranks that exchange heads by all-to-all and those that pass keys and values around a
    /// ring, their product c: (c, 1) for Ulysses, (1, c) for the ring and the all-gather.</summary>
    public (int AllToAll, int Ring) ContextParallelLevels => ContextParallelComm switch
    {
        ContextParallelCommType.A2a => (ContextParallel, 1),
        ContextParallelCommType.A2aP2p when HierarchicalAllToAllSize is int a && a > 0 && ContextParallel % a == 0 => (a, ContextParallel / a),
        _ => (1, ContextParallel),
    };

    /// <summary>Every reason the optimizer's flags are invalid: Megatron asserts the precision-aware optimizer is Adam's
    /// (megatron/core/optimizer/optimizer_config.py) and raises ValueError without the distributed optimizer
    /// (megatron/core/optimizer/__init__.py at d98e8a6), and torch.optim.SGD refuses a negative momentum; at 1 or above the
    /// momentum buffer never forgets a gradient and grows without bound.</summary>
    private IEnumerable<string> ValidateOptimizer()
    {
        var d = new RunDescription();
        if (Optimizer == OptimizerType.Sgd && AdamOrDefault.PrecisionAware)
            yield return "--use-precision-aware-optimizer needs --optimizer adam: it keeps Adam's states in Transformer Engine's FusedAdam (Megatron asserts the same).";
        else if (AdamOrDefault.PrecisionAware && !DistributedOptimizer)
            yield return "--use-precision-aware-optimizer needs --use-distributed-optimizer (or a --zero-stage): Megatron raises the same (get_megatron_optimizer).";
        if (SgdMomentum is not (>= 0 and < 1))
            yield return $"--sgd-momentum {SgdMomentum} is outside [0, 1).";
        else if (Optimizer != OptimizerType.Sgd && SgdMomentum != d.SgdMomentum)
            yield return "--sgd-momentum applies only with --optimizer sgd.";
    }

    /// <summary>Micro-batches each pipeline processes per iteration (m).</summary>
    public int NumMicroBatches => GlobalBatch / (MicroBatch * DataParallel);

    /// <summary>Every reason this config is invalid for the model and world size, in words; empty when valid.</summary>
    public IReadOnlyList<string> Validate(ModelSpec model, int worldSize)
    {
        var e = new List<string>();
        void Positive(string flag, int value)
        {
            if (value < 1) e.Add($"{flag} is {value}; it must be at least 1.");
        }
        Positive("data-parallel size", DataParallel);
        Positive("--tensor-model-parallel-size", TensorParallel);
        Positive("--pipeline-model-parallel-size", PipelineParallel);
        Positive("--context-parallel-size", ContextParallel);
        Positive("--micro-batch-size", MicroBatch);
        Positive("--global-batch-size", GlobalBatch);
        if (e.Count > 0) return e;
        e.AddRange(AdamOrDefault.Validate(Precision));
        e.AddRange(ValidateOptimizer());
        if (Fsdp is not null) e.AddRange(Fsdp.Validate(this));

        long ranks = (long)DataParallel * TensorParallel * PipelineParallel * ContextParallel;
        if (ranks != worldSize)
            e.Add($"world size {worldSize} != data {DataParallel} x tensor {TensorParallel} x pipeline {PipelineParallel} x context {ContextParallel} = {ranks}.");
        if (model.NumAttentionHeads % TensorParallel != 0)
            e.Add($"--num-attention-heads {model.NumAttentionHeads} is not divisible by --tensor-model-parallel-size {TensorParallel}.");
        // Without grouped-query attention the groups are the heads: their mistake is not reported twice.
        if (model.NumQueryGroups % TensorParallel != 0 && model.NumQueryGroups != model.NumAttentionHeads)
            e.Add($"--num-query-groups {model.NumQueryGroups} is not divisible by --tensor-model-parallel-size {TensorParallel}.");
        if (model.FfnHiddenSize % TensorParallel != 0)
            e.Add($"--ffn-hidden-size {model.FfnHiddenSize} is not divisible by --tensor-model-parallel-size {TensorParallel}.");
        bool splitValid = ValidatePipelineSplit(model, e);
        if ((long)MicroBatch * DataParallel > int.MaxValue)
            e.Add($"--micro-batch-size {MicroBatch} x data-parallel size {DataParallel} is above {int.MaxValue}, the largest --global-batch-size.");
        else if (GlobalBatch % (MicroBatch * DataParallel) != 0)
            e.Add($"--global-batch-size {GlobalBatch} is not divisible by --micro-batch-size {MicroBatch} x data-parallel size {DataParallel}.");
        if (SequenceParallel && TensorParallel < 2)
            e.Add("--sequence-parallel needs --tensor-model-parallel-size of at least 2.");
        long cpChunks = 2L * ContextParallel; // causal load balancing splits the sequence in 2·cp chunks
        if (ContextParallel > 1 && model.SeqLength % cpChunks != 0)
            e.Add($"--seq-length {model.SeqLength} is not divisible by 2 x --context-parallel-size {ContextParallel} (causal load balancing).");
        bool hierarchical = ContextParallelComm == ContextParallelCommType.A2aP2p;
        if (hierarchical && HierarchicalAllToAllSize is not int)
            e.Add("--cp-comm-type a2a+p2p needs --hierarchical-context-parallel-sizes (the all-to-all and ring sizes), as Megatron asserts.");
        else if (!hierarchical && HierarchicalAllToAllSize is int)
            e.Add($"--hierarchical-context-parallel-sizes applies only with --cp-comm-type a2a+p2p, not {ContextParallelComm.ToString().ToLowerInvariant()}.");
        else if (HierarchicalAllToAllSize is int a2a && (a2a < 2 || ContextParallel % a2a != 0 || ContextParallel / a2a < 2))
            e.Add($"--hierarchical-context-parallel-sizes has an all-to-all level of {a2a} for --context-parallel-size {ContextParallel}; a2a+p2p needs both levels above 1 and their product c (one level is --cp-comm-type a2a or p2p).");
        int allToAll = ContextParallelLevels.AllToAll;
        if (allToAll > 1 && model.NumAttentionHeads % TensorParallel == 0 && model.NumQueryGroups % TensorParallel == 0
            && (model.NumAttentionHeads / TensorParallel % allToAll != 0 || model.NumQueryGroups / TensorParallel % allToAll != 0))
            // Transformer Engine's AttnFuncWithCPAndQKVOA2A (and the a2a level of AttnFuncWithCPAndKVP2P) asserts
            // num_heads % cp_size == 0 for q and for k, v.
            e.Add($"--cp-comm-type {(hierarchical ? "a2a+p2p" : "a2a")} splits each tensor-parallel rank's attention heads ({model.NumAttentionHeads / TensorParallel}) and query groups ({model.NumQueryGroups / TensorParallel}) over {allToAll} context-parallel ranks; both must be divisible by {allToAll}.");
        if (SequenceParallel && (model.SeqLength / ContextParallel) % TensorParallel != 0)
            e.Add($"--seq-length {model.SeqLength} per context rank is not divisible by --tensor-model-parallel-size {TensorParallel} (sequence parallel).");
        if (OffloadRatio is < 0 or > 1 || double.IsNaN(OffloadRatio))
            e.Add($"offload ratio {FlagText.Of(OffloadRatio)} is outside [0, 1].");
        else if (OffloadRatio > 0)
        {
            if (LayersPerVirtualStage is null)
                e.Add("activation offload (Megatron-Kwai) needs the interleaved schedule (--num-layers-per-virtual-pipeline-stage).");
            if (PipelineParallel < 3)
                e.Add($"activation offload (Megatron-Kwai) needs --pipeline-model-parallel-size of at least 3, not {PipelineParallel}.");
        }
        // megatron/core/transformer/transformer_config.py, __post_init__.
        if (CpuOffloadingLayers < 0 || (CpuOffloadingLayers > 0 && CpuOffloadingLayers >= model.NumLayers))
            e.Add($"--cpu-offloading-num-layers {CpuOffloadingLayers} must be at least 0 and less than --num-layers {model.NumLayers}.");
        else if (CpuOffloadingLayers > 0)
        {
            if (PipelineParallel > 1) e.Add("--cpu-offloading does not run with pipeline parallelism (Megatron-core refuses it).");
            if (RecomputeOrNone.Granularity != RecomputeGranularity.None)
                e.Add("--cpu-offloading does not run with --recompute-granularity (Megatron-core refuses it).");
            if (OffloadRatio > 0) e.Add("--cpu-offloading and --offload-ratio are two activation offloads; pass one.");
        }
        if (ZeroStage is < 0 or > 3)
            e.Add($"ZeRO stage {ZeroStage} is not one of 0, 1, 2, 3.");
        // Stages 2 and 3 are DeepSpeed's (Costs/ZeroMicroBatchComm.cs). Megatron-core's own sharded data parallelism
        // (--use-megatron-fsdp, megatron/core/distributed/fsdp, at Megatron-LM d98e8a6) has no such check in its default
        // version 1 (training/arguments.py), though its optim_grads and optim_grads_params strategies also reduce-scatter
        // after every micro-batch's backward (megatron_fsdp.py, grad_reduce_every_bprop); its version 2 refuses pipeline,
        // tensor and context parallelism (mcore_fsdp_adapter.py, _validate_config). Its rules: MegatronFsdp.Validate.
        else if (ZeroStage >= 2 && PipelineParallel > 1 && Fsdp is null)
            e.Add($"ZeRO stage {ZeroStage} cannot run with --pipeline-model-parallel-size {PipelineParallel}: DeepSpeed's pipeline engine refuses stages 2 and 3 (deepspeed/runtime/pipe/engine.py asserts stage < 2) because their per-micro-batch gradient reduce-scatters, and stage 3's weight gathers, would repeat for every micro-batch on every pipeline stage; Megatron-FSDP (--use-megatron-fsdp) shards with pipelining.");
        if (DdpBucketSize is < 1)
            e.Add($"--ddp-bucket-size is {DdpBucketSize}; it must be at least 1 (elements).");
        if (OverlapOrDefault.ParamGather && !DistributedOptimizer)
            e.Add("--overlap-param-gather needs --use-distributed-optimizer: it overlaps that optimizer's all-gather of the weights.");
        if (ExpandableSegments && MaxSplitSizeMb is int split)
            e.Add($"--max-split-size-mb {split} does not apply with --expandable-segments: PyTorch's expandable segments split no cached blocks.");
        if (MaxSplitSizeMb is <= 20)
            e.Add($"--max-split-size-mb {MaxSplitSizeMb} must be above 20 (PyTorch's kLargeBuffer, 20 MiB).");
        if (SyncFactor is < 0 or > 1 || double.IsNaN(SyncFactor))
            e.Add($"sync factor p {FlagText.Of(SyncFactor)} is outside [0, 1].");
        else if (SyncFactor < 1 && TensorParallel < 2)
            e.Add($"sync factor p {FlagText.Of(SyncFactor)} < 1 needs --tensor-model-parallel-size of at least 2.");
        else if (SyncFactor < 1 && SequenceParallel)
            e.Add("partial synchronization (p < 1) replaces the full all-reduce and cannot be combined with --sequence-parallel.");
        var r = RecomputeOrNone;
        if (r.Granularity == RecomputeGranularity.Full)
        {
            // Each distinct chunk size; a stage's share where the split is invalid.
            var sizes = splitValid ? ChunkSizes(model) : [model.NumLayers / PipelineParallel];
            if (r.NumLayers < 1)
                e.Add($"--recompute-num-layers is {r.NumLayers}; it must be at least 1.");
            else if (r.Method == RecomputeMethod.Block && sizes.Min() is int fewest && r.NumLayers > fewest)
                e.Add($"--recompute-num-layers {r.NumLayers} exceeds the {fewest} layers of a pipeline stage's model chunk.");
            else if (r.Method == RecomputeMethod.Uniform && sizes.FirstOrDefault(n => n % r.NumLayers != 0) is int odd and > 0)
                e.Add($"--recompute-num-layers {r.NumLayers} does not divide the {odd} layers of a model chunk (uniform method).");
        }
        if ((r.NormOutputs || r.MlpActivation) && r.Granularity == RecomputeGranularity.Full)
            e.Add("Megatron-Kwai's norm/activation recompute cannot be combined with full recomputation.");
        if (r.MlpActivation && model.Activation != Activation.SwiGlu)
            e.Add("--kaimm-recompute-mlp-activation-func needs a SwiGLU model (--swiglu).");
        if (r.NormOutputs && !SequenceParallel && TensorParallel > 1)
            e.Add("--kaimm-recompute-norm needs --sequence-parallel when tensor parallelism is on.");
        return e;
    }
}
