using Harness.Executor.ContextParallel;
using Harness.Executor.DataParallel;
using Harness.Executor.Fused;
using Harness.Executor.Offload;
using Harness.Executor.Optimizer;
using Harness.Executor.PipelineParallel;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Executor.Distributed;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>
/// One rank's training step under a <see cref="RunDescription"/> (Megatron's train_step): the rank builds its
/// model chunks (tensor-parallel shards of its pipeline stages), one flat gradient buffer over them, and per
/// iteration runs the pipeline schedule over its data-parallel share of the batch, finalizes the gradients bucket by
/// bucket (tensor-parallel replicated parameters, tied embeddings across stages, data-parallel average; during
/// backward with --overlap-grad-reduce: <see cref="GradientSync"/>), and steps the optimizer (--optimizer adam or sgd), replicated
/// or distributed. With a loss scaler (<see cref="Optimizer.GradScaler"/>: fp16, or --loss-scale) the last stage's
/// backward starts from the scaled loss, and before the step every rank unscales the main gradients it steps and the
/// ranks agree on whether any overflowed (Megatron's MixedPrecisionOptimizer.prepare_grads); if so, every rank skips
/// the step. Loss and gradient norm (none when skipped) come back on every rank. ZeRO 2 reduce-scatters every micro-batch's
/// gradients into the distributed optimizer's shards; ZeRO 3 also partitions the weights (<see cref="PartitionedParams"/>),
/// gathering each unit around its forward and backward (<see cref="PartitionedParamCoordinator"/>).
/// </summary>
public sealed class ParallelTrainer : IDisposable
{
    private readonly ProcessGroups groups;
    private readonly RunDescription parallel;
    private readonly ModelSpec spec;
    private readonly Device device;
    private readonly ScalarType dtype;
    private readonly ShardedTensorParallel tp;
    private readonly ContextParallelism? contextParallel;
    private readonly DropoutRng? dropout;
    private readonly List<ModelChunk> chunks = new();
    private readonly ChunkList container;
    private readonly P2PCommunication? p2p;
    private readonly ReplicatedOptimizer? replicated;
    private readonly DistributedOptimizer? distributedOptimizer;
    private readonly GradientNorm gradientNorm;
    private readonly ICommunicationStream? communicationStream;
    private readonly GradientSync gradSync;
    private readonly ParamGather? paramGather;
    private readonly PartitionedParams? partitioned;
    /// <summary>ZeRO 3's schedule of gathers, one per model chunk; null below stage 3.</summary>
    private readonly IReadOnlyList<PartitionedParamCoordinator>? zero3;
    private readonly IHostLink? hostLink;

    /// <summary>
    /// Builds this rank's part of <paramref name="model"/> (its vocabulary padded for tensor parallelism) under
    /// <paramref name="description"/>, which sets everything: the layout, precision, recomputation, context-parallel
    /// exchange (--cp-comm-type), bucket size, gradient-reduce and param-gather overlap, the fusions (resolved for
    /// <paramref name="device"/>: <see cref="Fusions"/>); dropout is the model's. Throws ArgumentException with the first
    /// reason it cannot run it.
    /// </summary>
    /// <param name="seed">Every weight is drawn at full shape from a generator of this seed and the weight's name in the serial
    /// model (<see cref="WeightInit"/>), so every rank holds exactly its slice of the serial model's weights from that seed,
    /// independently of libtorch's global generator (in-process ranks run concurrently); dropout streams are seeded by it too.</param>
    /// <param name="lossScale">The loss-scaling settings, which apply by Megatron's rule (<see cref="GradScaler.For"/>).</param>
    public ParallelTrainer(ProcessGroups groups, ModelSpec model, RunDescription description, Device device, int seed, AdamSettings adam,
        LossScaleSettings? lossScale = null)
    {
        var errors = description.Validate(model, groups.World.Size).Concat(ExecutorSupport.Refusals(description)).ToList();
        if (errors.Count > 0) throw new ArgumentException(errors[0]);
        (this.groups, parallel, spec, this.device) = (groups, description, model, device);
        dtype = ExecutorSupport.ComputeDtype(description.Precision);
        // ZeRO 2 and 3 keep no main gradients for the GEMMs to add into: autograd's gradients go to reduce buckets.
        bool zeroShardsGradients = description.ZeroStage >= 2;
        Fusions = Fusions.Resolve(description.FusedKernels, description.FusedGptKernels, description.GradientAccumulationFusion && !zeroShardsGradients, device, dtype,
            AttentionKernel.Select(model, description, device, dtype), GptKernels.Serves(model));
        if (description.GradientAccumulationFusion && zeroShardsGradients)
            Fusions = Fusions with { Notes = [.. Fusions.Notes,
                $"gradient-accumulation fusion off under {(description.Fsdp is null ? $"--zero-stage {description.ZeroStage}" : $"--data-parallel-sharding-strategy {MegatronFsdp.StrategyName(description.ZeroStage)}")}: there are no main gradients to accumulate into; each micro-batch's gradients are reduce-scattered into the optimizer's shards."] };
        tp = new ShardedTensorParallel(groups.Tensor, parallel.SequenceParallel, parallel.SyncFactor < 1 ? parallel.SyncFactor : null);
        contextParallel = parallel.ContextParallel > 1
            ? new ContextParallelism(groups.Context, parallel.ContextParallelComm, parallel.ContextParallelLevels.AllToAll) : null;
        // Fused kernels where they apply per rank: SwiGLU and the QKV rotary on this rank's heads (not under context
        // parallelism, whose positions are not 0..s-1), the cross-entropy only over an unsplit vocabulary (GptModel.Loss).
        dropout = model.Dropout ? new DropoutRng(seed, groups.TensorRank, groups.PipelineRank, parallel.SequenceParallel, device) : null;
        var config = new TransformerConfig(spec, device, dtype, tp, parallel.Recompute, InitSeed: seed, ContextParallel: contextParallel,
            UseFusedKernels: Fusions.Kernels, UseFusedGptKernels: Fusions.GptKernels, FusedSwiGlu: description.FusedSwiGlu, HiddenDropout: model.HiddenDropout, AttentionDropout: model.AttentionDropout, Dropout: dropout,
            FusedNorm: description.FusedNorm, FusedElementwise: description.FusedElementwise);
        int v = parallel.VirtualStages(spec);
        for (int c = 0; c < v; c++)
        {
            var part = PipelineChunk.Of(spec, parallel, groups.PipelineRank, c);
            chunks.Add(new ModelChunk(new GptModel(config, part), part));
        }
        container = new ChunkList(chunks.Select(c => c.Model).ToArray());
        Buffer = new ParamAndGradBuffer(container, dtype, masterWeights: !parallel.DistributedOptimizer, gradientAccumulationFusion: Fusions.GradientAccumulation,
            gradients: parallel.ZeroStage < 2, weights: parallel.ZeroStage < 3, mainGradsInFp32: description.GradientsInFp32);
        if (parallel.PipelineParallel > 1)
            p2p = new P2PCommunication(groups.Pipeline.Split(0, groups.PipelineRank, "pp-activations")!, groups.Pipeline.Split(0, groups.PipelineRank, "pp-gradients")!);
        bool embeddingCopy = TiedAcrossStages && groups.IsLastStage;
        var excluded = GradientNorm.Duplicates(Buffer, tp, groups.TensorRank, embeddingCopy);
        var sumOver = new List<ICommunicator> { groups.ModelParallel };
        if (parallel.DistributedOptimizer) sumOver.Add(groups.DataWithContext);
        gradientNorm = new GradientNorm(excluded, sumOver);
        SyncTiedEmbedding();
        GradScaler = GradScaler.For(description, lossScale ?? new LossScaleSettings());
        bool overlapGradReduce = parallel.OverlapOrDefault.GradientReduce, overlapParamGather = parallel.OverlapOrDefault.ParamGather;
        // ZeRO 3 prefetches each unit's weights on the communication stream whatever the flags.
        communicationStream = overlapGradReduce || overlapParamGather || parallel.ZeroStage >= 3 ? groups.DataWithContext.CreateCommunicationStream() : null;
        // ZeRO 3's buckets are its gather units; Megatron-FSDP's optim_grads reduce-scatters by the same units (a layer).
        var buckets = parallel.ZeroStage >= 3 || parallel.ShardsPerLayer ? GradBucket.OfUnits(Buffer, GatherUnit) : GradBucket.Of(Buffer, ZeroBucketSize(parallel));
        if (parallel.ZeroStage >= 3) partitioned = new PartitionedParams(Buffer, buckets, groups.DataWithContext, communicationStream!);
        var states = description.AdamOrDefault;
        // The fused AdamW kernel reads float32 gradients and states: the precision-aware optimizer's step runs libtorch's operators.
        var rule = IUpdateRule.For(description, adam, Fusions.Kernels && !states.PrecisionAware);
        if (parallel.DistributedOptimizer)
            distributedOptimizer = new DistributedOptimizer(Buffer, buckets, groups.DataWithContext, rule, gradientNorm, partitioned, states.PrecisionAware ? states : null);
        else replicated = new ReplicatedOptimizer(Buffer, rule);
        if (partitioned is not null)
        {
            partitioned.ReleaseAll();
            partitioned.ResetPeak();
            zero3 = Enumerable.Range(0, chunks.Count).Select(c => Coordinator(partitioned, buckets, c)).ToArray();
        }
        gradSync = new GradientSync(Buffer, buckets, groups.DataWithContext, distributedOptimizer, (b, grads) =>
        {
            FinalizeModelGrads.AllReduceReplicatedGrads(tp, Buffer, b, grads);
            FinalizeModelGrads.AllReduceEmbeddingGrads(TiedAcrossStages ? groups.Embedding : null, Buffer, b, grads);
        }, FinalAfter, overlapGradReduce ? communicationStream : null, everyMicroBatch: parallel.ZeroStage >= 2,
            oncePerStep: b => TiedAcrossStages && Buffer.Layout.Any(l => l.Name.EndsWith("word_embeddings") && l.Offset >= b.Offset && l.Offset < b.Offset + b.Count));
        if (overlapParamGather) paramGather = new ParamGather(distributedOptimizer!, Buffer, distributedOptimizer!.GatheredBuckets, FirstUse, communicationStream!);
        if (parallel.OffloadRatio > 0 || parallel.CpuOffloadingLayers > 0)
            hostLink = HostLink.For(device);
    }

    /// <summary>Elements per gradient bucket: Megatron's bucket size for ZeRO 1 and below, DeepSpeed's reduce_bucket_size for ZeRO 2,
    /// as the simulator costs them (DataParallelComm, ZeroMicroBatchComm).</summary>
    private static long ZeroBucketSize(RunDescription d) =>
        d.ZeroStage >= 2 ? (long)ZeroMicroBatchComm.ReduceBucketSize(d) : DataParallelComm.BucketSize(d);

    /// <summary>How a chunk's layers run: ZeRO 3 gathers a group as one unit (one layer, Megatron-FSDP's unit, unless full
    /// recomputation groups several).</summary>
    private IReadOnlyList<LayerGroup> LayerGroups(int chunk) => RecomputeGroups.Of(chunks[chunk].Part.NumLayers, parallel.RecomputeOrNone);

    /// <summary>ZeRO 3's gather unit of a weight matrix ("chunks.c.*"): the chunk's embeddings, its output layer, or the layer
    /// group (<see cref="RecomputeGroups"/>: a group of full recomputation runs as one, in the forward and again in the backward)
    /// its layer is in.</summary>
    private string GatherUnit(string name)
    {
        var parts = name.Split('.');
        string chunk = parts[1];
        if (parts[2] != "layers") return $"{chunk} {(parts[2] is "output_layer" ? "output" : "embedding")}";
        int layer = int.Parse(parts[3]);
        return $"{chunk} group {LayerGroups(int.Parse(chunk)).Single(g => layer >= g.First && layer < g.First + g.Count).First}";
    }

    /// <summary>ZeRO 3's schedule over chunk <paramref name="c"/>'s units (<see cref="GradBucket.OfUnits"/> made them from the
    /// output end): the embeddings where the chunk embeds, the output layer (or the tied table's copy) where it computes the loss.</summary>
    private PartitionedParamCoordinator Coordinator(PartitionedParams units, IReadOnlyList<GradBucket> buckets, int c)
    {
        GradBucket? UnitOf(string name)
        {
            var entry = Buffer.Layout.FirstOrDefault(l => l.Name == name || l.Name.StartsWith(name + "."));
            if (entry.Name is null) return null;
            return buckets.Single(b => entry.Offset >= b.Offset && entry.Offset < b.Offset + b.Count);
        }
        var part = chunks[c].Part;
        var groups = LayerGroups(c).Select(g => (g.First, UnitOf($"chunks.{c}.layers.{g.First}")!)).ToList();
        var embedding = part.PreProcess ? UnitOf($"chunks.{c}.word_embeddings") : null;
        var output = part.PostProcess ? UnitOf($"chunks.{c}.output_layer") ?? UnitOf($"chunks.{c}.word_embeddings") : null;
        return new PartitionedParamCoordinator(units, embedding, groups, output, part.NumLayers);
    }

    /// <summary>What activation offload saved and offloaded in the last step, per chunk and micro-batch (Megatron-Kwai's), or
    /// per offloaded layer (in <see cref="OffloadRecord.Chunk"/>) and micro-batch (Megatron-core's CPU offloading); empty without.</summary>
    public IReadOnlyList<OffloadRecord> Offloaded { get; private set; } = [];

    /// <summary>The fusions this rank runs: those the description asks for that work on its device.</summary>
    public Fusions Fusions { get; }

    public ParamAndGradBuffer Buffer { get; }

    /// <summary>The loss scaler's state after the last step (the same on every rank); null when the run scales no loss.</summary>
    public GradScaler? GradScaler { get; internal set; }

    public ProcessGroups Groups => groups;

    /// <summary>The model this rank holds part of (its vocabulary padded for tensor parallelism).</summary>
    public ModelSpec Model => spec;

    /// <summary>The optimizer's state over this rank's part of the buffer: all of it, or its data-parallel shard.</summary>
    public IOptimizerState Optimizer => (IOptimizerState?)distributedOptimizer ?? replicated!;

    /// <summary>How this run's checkpoints are split into files.</summary>
    public CheckpointLayout CheckpointLayout => CheckpointLayout.Of(parallel, spec);

    /// <summary>Time this rank has spent communicating, over all its groups, since it started.</summary>
    public TimeSpan CommunicationTime =>
        groups.All.Aggregate(p2p?.CommunicationTime ?? TimeSpan.Zero, (sum, g) => sum + g.Stats.Time);

    /// <summary>Micro-batches this rank's pipeline runs per iteration.</summary>
    private int MicroBatches => parallel.NumMicroBatches;

    private bool TiedAcrossStages => spec.TiedEmbeddings && parallel.PipelineParallel > 1;

    /// <summary>
    /// This rank's parameters under the names they have in the serial model (global layer numbers), so weights
    /// can be loaded from, and gradients compared with, a single-device run.
    /// </summary>
    public IEnumerable<(string SerialName, Parameter Parameter)> NamedParameters()
    {
        for (int c = 0; c < chunks.Count; c++)
            foreach (var (name, p) in chunks[c].Model.named_parameters())
                yield return (SerialName(name, chunks[c].Part), p);
    }

    /// <summary>
    /// Sets every parameter from <paramref name="source"/> (given its serial name and this rank's shape) and
    /// refreshes what the optimizer derived from the weights.
    /// </summary>
    public void LoadWeights(Func<string, Parameter, Tensor> source)
    {
        FinishParamSync(); // a pending all-gather would overwrite what is loaded; ZeRO 3's units are gathered to be set
        using (no_grad())
            foreach (var (name, p) in NamedParameters())
            {
                // What the source makes (a shard, a view) is held here until copy_ returns, then released: passed on as a
                // bare argument it is the finalizer's as soon as TorchSharp has read its handle (see ParamAndGradBuffer).
                using var scope = NewDisposeScope();
                p.copy_(source(name, p));
            }
        Buffer.CopyParamsToMaster(0, Buffer.Count);
        distributedOptimizer?.ReloadMaster();
        if (partitioned is null) return;
        distributedOptimizer!.CopyMasterToParams(); // the partitions from the loaded weights; the units released
        partitioned.ResetPeak();
    }

    /// <summary>Under the distributed optimizer (ZeRO 1 to 3), this rank's reduced gradients of the last step (clipped), each with
    /// the buffer offset it starts at; null with a replicated optimizer, whose gradients are the parameters' own.</summary>
    public IReadOnlyList<(Tensor Grads, long Offset)>? ShardGradients => distributedOptimizer?.GradShards();

    /// <summary>ZeRO 3: the most bytes this rank's parameters held at once since the weights were set (partitions, gathered
    /// units, vectors; <see cref="PartitionedParams.PeakResidentBytes"/>); null below stage 3.</summary>
    public long? PeakResidentWeightBytes => partitioned?.PeakResidentBytes;

    /// <summary>
    /// With --overlap-param-gather, the last step's all-gathers of the weights finish in the next forward: this waits for
    /// them, so that the model's weights are the optimizer's (before reading them; Megatron's param sync at the end of
    /// training). Without, nothing is pending. Under ZeRO 3 every unit is gathered (DeepSpeed's GatheredParameters), until
    /// the next forward frees them.
    /// </summary>
    public void FinishParamSync()
    {
        paramGather?.Finish();
        partitioned?.GatherAll();
    }

    private static string SerialName(string name, PipelineChunk part)
    {
        if (!name.StartsWith("layers.")) return name;
        int dot = name.IndexOf('.', 7);
        return $"layers.{part.FirstLayer + int.Parse(name[7..dot])}{name[dot..]}";
    }

    /// <summary>
    /// One iteration. <paramref name="microBatch"/> gives this rank's tokens and labels [b, s] of micro-batch i
    /// (its data-parallel share). Returns the mean loss and the gradient norm, as host values on every rank; the norm is
    /// null when the step was skipped because a gradient overflowed.
    /// </summary>
    /// <param name="iteration">Iterations done before this one (the dropout streams are seeded per iteration).</param>
    public (float Loss, float? GradNorm) Step(double lr, Func<int, (Tensor Tokens, Tensor Labels)> microBatch, long iteration = 0)
    {
        dropout?.StartIteration(iteration);
        using var scope = NewDisposeScope();
        Buffer.ZeroGrads();
        if (parallel.ZeroStage >= 2) distributedOptimizer!.ZeroGradShards();
        var offload = parallel.OffloadRatio > 0 ? new ActivationOffloader(parallel.OffloadRatio, hostLink!) : null;
        Func<LayerOffloader>? layerOffload = parallel.CpuOffloadingLayers > 0 ? () => new LayerOffloader(spec.NumLayers, parallel.CpuOffloadingLayers, hostLink!) : null;
        var layerRecords = new List<OffloadRecord>();
        var loss = PipelineExecutor.ForwardBackward(chunks, p2p, MicroBatches, Local(microBatch), ActivationShape, dtype, device, gradSync, paramGather, zero3, GradScaler?.Scale ?? 1,
                       offload, layerOffload, layerRecords)
                   ?? zeros(1, dtype: ScalarType.Float32, device: device);
        Offloaded = offload?.Records ?? layerRecords;
        gradSync.Finish();
        bool skipped = false;
        var grads = distributedOptimizer?.MainGradShards() ?? [(ParamAndGradBuffer.Float32Grads(Buffer.MainGrads), 0)];
        if (GradScaler is { } scaler)
        {
            using var flag = MainGradUnscale.UnscaleAndFindInf(grads.Select(g => g.Grads), scaler.InverseScale, device);
            skipped = gradientNorm.FoundInf(flag);
            GradScaler = scaler.Update(skipped);
        }
        // A skipped step leaves the weights, the master weights and the optimizer's state as they were, on every rank alike.
        var norm = skipped ? null
            : distributedOptimizer?.ClipAndStep(lr, grads, gatherParams: paramGather is null) ?? replicated!.ClipAndStep(lr, grads[0].Grads, g => gradientNorm.Compute(g));
        var reported = Reported(loss);
        // After the loss's all-reduce on the same group, so the two never run on two streams at once.
        paramGather?.Start();
        var host = (norm is null ? reported : cat([reported, norm.reshape(1).to(ScalarType.Float32)])).cpu().data<float>().ToArray();
        return (host[0], norm is null ? null : host[1]);
    }

    /// <summary>
    /// The validation loss of one global batch (Megatron's evaluate): the pipeline's forward passes alone over this rank's
    /// micro-batches, without dropout, with every weight in place (a pending all-gather finished, ZeRO 3's units gathered and
    /// released again after). Returns the mean loss on every rank.
    /// </summary>
    public float Evaluate(Func<int, (Tensor Tokens, Tensor Labels)> microBatch)
    {
        FinishParamSync();
        if (dropout is not null) dropout.Evaluating = true;
        try
        {
            using var scope = NewDisposeScope();
            var loss = PipelineExecutor.Forward(chunks, p2p, MicroBatches, Local(microBatch), ActivationShape, dtype, device)
                ?? zeros(1, dtype: ScalarType.Float32, device: device);
            return Reported(loss).cpu().item<float>();
        }
        finally
        {
            if (dropout is not null) dropout.Evaluating = false;
            partitioned?.ReleaseAll();
        }
    }

    /// <summary>What travels between stages: [b, s, h] of this rank's sequence block.</summary>
    private long[] ActivationShape =>
        [parallel.MicroBatch, spec.SeqLength / parallel.ContextParallel / (parallel.SequenceParallel ? parallel.TensorParallel : 1), spec.HiddenSize];

    /// <summary>This rank's part of each micro-batch: under context parallelism its two chunks of every sequence (causal load balancing).</summary>
    private Func<int, (Tensor Tokens, Tensor Labels)> Local(Func<int, (Tensor Tokens, Tensor Labels)> microBatch) =>
        contextParallel is null ? microBatch : i =>
        {
            var (tokens, labels) = microBatch(i);
            return (contextParallel.Slice(tokens), contextParallel.Slice(labels));
        };

    /// <summary>The loss on every rank: the last stage's, averaged over data (and context) replicas.</summary>
    private Tensor Reported(Tensor loss)
    {
        var reported = loss.reshape(1).to(ScalarType.Float32).contiguous();
        if (parallel.PipelineParallel > 1) groups.Pipeline.Broadcast(reported, parallel.PipelineParallel - 1);
        if (groups.DataWithContext.Size > 1) groups.DataWithContext.AllReduce(reported, ReduceOp.Avg);
        return reported;
    }

    /// <summary>
    /// Where backward finishes a parameter's gradient, for <see cref="GradientSync"/>'s markers: a layer's at the layer's
    /// input, the final norm's and output layer's at the final norm's input (by chunk, "chunks.c.*" in the buffer);
    /// the embeddings' only once backward is over (a tied table is used at both ends).
    /// </summary>
    private (int Chunk, int Point)? FinalAfter(string name)
    {
        var parts = name.Split('.');
        int c = int.Parse(parts[1]);
        return parts[2] switch
        {
            "layers" => (c, int.Parse(parts[3])),
            "final_layernorm" or "output_layer" => (c, chunks[c].Part.NumLayers),
            _ => null,
        };
    }

    /// <summary>
    /// Where the forward first uses a parameter, for <see cref="ParamGather"/>: where backward finishes it (a layer's at
    /// the layer's input, the final norm's and output layer's at the final norm's input), the embeddings' before the first
    /// layer (the last stage's copy of a tied table is used only at the end, but waiting early costs only some overlap).
    /// </summary>
    private (int Chunk, int Point) FirstUse(string name) => FinalAfter(name) ?? (int.Parse(name.Split('.')[1]), 0);

    /// <summary>The last stage's copy of a tied word embedding starts equal to the first stage's (Megatron zeroes it and all-reduces).</summary>
    private void SyncTiedEmbedding()
    {
        if (!TiedAcrossStages || groups.Embedding is null) return;
        using var _ = no_grad();
        foreach (var (_, p, offset) in Buffer.Layout.Where(l => l.Name.EndsWith("word_embeddings")))
        {
            // The weights themselves: an all-reduce of bf16 zeros and one copy is exact.
            // Held until the all-reduce returns: the trainer is built outside any dispose scope, where a bare view can be finalized mid-call.
            // Under ZeRO 3 the buffer holds no weights: each parameter is still whole here, before its unit is partitioned.
            using var flat = parallel.ZeroStage >= 3 ? p.detach().reshape(-1) : Buffer.Params.narrow(0, offset, p.numel());
            if (groups.IsLastStage && !groups.IsFirstStage) flat.zero_();
            groups.Embedding.AllReduce(flat);
            Buffer.CopyParamsToMaster(offset, p.numel());
        }
    }

    public void Dispose()
    {
        communicationStream?.Dispose(); // synchronizes the stream: a gather still in flight is done with its buffers
        hostLink?.Dispose();
        paramGather?.Dispose();
        partitioned?.Dispose();
        replicated?.Dispose();
        distributedOptimizer?.Dispose();
        Buffer.Dispose();
        container.Dispose();
        p2p?.Dispose();
        contextParallel?.Dispose();
        dropout?.Dispose();
    }
}

/// <summary>This rank's model chunks as one module, so one flat buffer holds all their parameters ("chunks.i.*").</summary>
internal sealed class ChunkList : nn.Module
{
    private readonly ModuleList<GptModel> chunks;

    public ChunkList(GptModel[] models) : base(nameof(ChunkList))
    {
        chunks = new ModuleList<GptModel>(models);
        RegisterComponents();
    }
}
