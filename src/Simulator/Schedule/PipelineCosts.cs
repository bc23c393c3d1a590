using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Simulator.Schedule;

/// <summary>Per-rank quantities that differ between the first, middle and last pipeline stage.</summary>
/// <param name="Parameters">Parameters held (all model chunks of the rank).</param>
/// <param name="GradientReduceAfter">Data-parallel gradient sync that cannot overlap backward (tied embedding
/// all-reduce between first and last stage).</param>
/// <param name="ParameterGather">All-gather of the updated weights after the optimizer step.</param>
public readonly record struct RankCosts(
    double Parameters, ModelStateBytes State, double Optimizer, double ParameterGather, double GradientReduceAfter);

/// <summary>
/// Everything the pipeline schedule needs, for one configuration: the duration of a model chunk's forward
/// and backward on one micro-batch (with its exposed tensor/context-parallel communication and
/// recomputation), the extra work of the first chunk (embedding) and the last (output layer and loss), p2p
/// transfer times, offload transfers, activation bytes and the per-stage state. Built once per configuration
/// by <see cref="Build"/>; a pure function of (model, cluster, config). Equal costs run the same schedule
/// (<see cref="PipelineSimulator"/> replays an equal one's outcome).
/// </summary>
public readonly record struct PipelineCosts
{
    public int P { get; init; }
    public int V { get; init; }
    public int M { get; init; }

    /// <summary>A model chunk of the middle virtual stages (of every one where the layers split evenly), layers only.</summary>
    public ChunkCosts Chunk { get; init; }
    /// <summary>The first virtual stage's chunk (rank 0's first) where it differs from <see cref="Chunk"/>: it holds its own
    /// number of layers (uneven stages, --decoder-first-pipeline-num-layers, one chunk per rank, or the embedding counted as
    /// a layer), or Megatron-Kwai's offload cuts the embedding's dropout mask with its activations; null: <see cref="Chunk"/>.</summary>
    public ChunkCosts? FirstStageChunk { get; init; }
    /// <summary>The last virtual stage's chunk (the last rank's last) where it holds its own number of layers; null: <see cref="Chunk"/>.</summary>
    public ChunkCosts? LastStageChunk { get; init; }

    /// <summary>Model chunk <paramref name="chunk"/> of pipeline rank <paramref name="rank"/>.</summary>
    public ChunkCosts ChunkOf(int rank, int chunk) =>
        rank == 0 && chunk == 0 && FirstStageChunk is { } first ? first
        : rank == P - 1 && chunk == V - 1 && LastStageChunk is { } last ? last : Chunk;

    /// <summary>All the model chunks of rank <paramref name="rank"/> together.</summary>
    public ChunkCosts RankChunks(int rank)
    {
        var sum = default(ChunkCosts);
        for (int c = 0; c < V; c++) sum += ChunkOf(rank, c);
        return sum;
    }

    /// <summary>Whether the first or last virtual stage's chunk differs from the middle ones (<see cref="FirstStageChunk"/>,
    /// <see cref="LastStageChunk"/>).</summary>
    public bool Uneven => FirstStageChunk is not null || LastStageChunk is not null;

    // First chunk (embedding) and last chunk (final norm, output layer, loss) extras, one micro-batch.
    public double FirstForwardExtra { get; init; }
    public double FirstBackwardExtra { get; init; }
    public double FirstExtraTensorParallel { get; init; }
    public double FirstExtraDataParallel { get; init; }
    public double LastForwardExtra { get; init; }
    public double LastBackwardExtra { get; init; }
    public double LastExtraTensorParallel { get; init; }
    public double LastExtraDataParallel { get; init; }

    /// <summary>One activation (or gradient) transfer between adjacent stages.</summary>
    public double P2p { get; init; }
    /// <summary>Whether the p2p transfer overlaps the sender's next compute in the steady state of the interleaved schedule
    /// (else the sender waits for it after every op).</summary>
    public bool P2pOverlapped { get; init; }

    /// <summary>Megatron-Kwai's alpha (the chunks' offload: <see cref="ChunkCosts.Offloaded"/>).</summary>
    public double OffloadRatio { get; init; }

    /// <summary>Megatron-core's CPU offloading: what one micro-batch's forward and backward wait for its copies
    /// (<see cref="CpuOffloading.Stall"/>); part of neither chunk's forward nor its backward.</summary>
    public double CpuOffloadForwardStall { get; init; }
    public double CpuOffloadBackwardStall { get; init; }

    // Activation bytes of one micro-batch kept from forward to backward, beyond the chunks'.
    public double FirstExtraActivations { get; init; }
    public double LastExtraActivations { get; init; }
    // Temporaries alive only during an op.
    public double BackwardTransient { get; init; }
    public double FirstBackwardTransient { get; init; }
    public double LastForwardTransient { get; init; }
    public double LastBackwardTransient { get; init; }

    // Data-parallel gradient reduction of the embedding's and the output layer's parameters, beyond the chunks'.
    public double FirstExtraGradientReduce { get; init; }
    public double LastExtraGradientReduce { get; init; }
    public bool GradientReduceOverlapped { get; init; }

    public RankCosts First { get; init; }
    public RankCosts Middle { get; init; }
    public RankCosts Last { get; init; }

    public RankCosts Rank(int r) => r == P - 1 ? Last : r == 0 ? First : Middle;

    /// <summary>Work (seconds) one rank's compute stream does per micro-batch, excluding bubbles.</summary>
    public double RankWorkPerMicroBatch(int r)
    {
        var chunks = RankChunks(r);
        return chunks.Forward + chunks.Backward
               + (r == 0 ? FirstForwardExtra + FirstBackwardExtra : 0)
               + (r == P - 1 ? LastForwardExtra + LastBackwardExtra : 0);
    }

    /// <summary>
    /// Chunks whose offloaded activations are on the GPU together under Megatron-Kwai's offload (ATC'24 artifact,
    /// schedules.py forward_backward_pipelining_with_interleaving and offload.py): the forward in progress, whose offload
    /// starts after it; the previous forward's, whose tensors the copy tasks hold until offload_async exits after the next
    /// forward; and the two persistent reload buffers (onload_ping and onload_pong, get_persistent_gpu_buffer, never freed):
    /// the backward in use and the next one being prefetched. Figure 7 agrees: from alpha 0 to 1 the peak falls by 43 of the
    /// 47 in-flight chunks' activations at both recompute settings (t2 c2 p8 v5).
    /// </summary>
    public const int OffloadWindowChunks = 4;

    /// <summary>
    /// Share of the GPU's SMs NCCL's kernels occupy while a collective runs: NVLink all-gather, reduce-scatter
    /// and all-reduce use one CTA per channel, 16-32 channels on A100/H100 (108/132 SMs). Communication hidden
    /// behind compute is not free: the compute it overlaps runs on the remaining SMs.
    /// </summary>
    public const double NcclSmShare = 0.2;

    /// <summary>Time a collective of <paramref name="comm"/> seconds adds when it runs beside <paramref name="compute"/>
    /// seconds of kernels: what sticks out, plus the overlapped compute slowed by NCCL's share of the SMs.</summary>
    public static double Overlapped(double comm, double compute) =>
        Math.Max(0, comm - compute) + NcclSmShare * Math.Min(comm, compute);

    public static PipelineCosts Build(ModelSpec m, ClusterSpec cluster, RunDescription c)
    {
        var gpu = cluster.Gpu;
        // Every cost below sees the attention kernel that runs (auto resolved for this GPU and precision).
        if (c.AttentionBackend == AttentionBackend.Auto) c = c with { AttentionBackend = AttentionKernels.Resolve(c, gpu) };
        int p = c.PipelineParallel, v = c.VirtualStages(m);
        var overlap = c.OverlapOrDefault;
        var r = c.RecomputeOrNone;

        // One layer: compute, then the communication it cannot hide.
        var layer = ComputeTime.Layer(m, c, gpu);
        var tp = TensorParallelComm.Layer(m, c, cluster);
        double tpF = !overlap.TensorParallelComm ? tp.Forward
            : overlap.TensorParallelForwardReduceScatter ? Overlapped(tp.Forward, layer.GemmForward)
            : Overlapped(tp.Forward - tp.ForwardReduceScatter, layer.GemmForward) + tp.ForwardReduceScatter;
        double tpB = overlap.TensorParallelComm
            ? Overlapped(tp.BackwardBlocking + tp.BackwardAsync, 2 * layer.GemmForward)
            : tp.BackwardBlocking + (overlap.TensorParallelBackwardAsync ? Overlapped(tp.BackwardAsync, layer.WeightGradGemm) : tp.BackwardAsync);
        // Context parallelism: the ring's exchange hides behind attention; an all-gather (Transformer Engine's
        // AttnFuncWithCPAndKVAllGather, or Megatron-Kwai's without its GEMM overlap) and Ulysses' all-to-alls are on the
        // critical path; a2a+p2p runs both the all-to-alls and the ring.
        var (ringF, ringB) = ContextParallelComm.Layer(m, c, cluster);
        var (a2aF, a2aB) = ContextParallelComm.AllToAll(m, c, cluster);
        var (cpFx, cpBx) = c.ContextParallelComm == ContextParallelCommType.AllGather
                           || (c.ContextParallelComm == ContextParallelCommType.P2p && !overlap.ContextParallelComm)
            ? ContextParallelComm.Exposed(m, c, cluster)
            : overlap.ContextParallelComm
            ? (a2aF + Overlapped(ringF, layer.AttentionForward), a2aB + Overlapped(ringB, layer.AttentionBackward))
            : (a2aF + ringF, a2aB + ringB);

        double layerForward = layer.Forward + tpF + cpFx;

        // First chunk: embedding, plus its TP reduction (all-reduce, or reduce-scatter with SP) and CAAT's entry all-reduce.
        var tpGroup = Topology.TensorGroup(c, cluster.GpusPerNode);
        double S = TensorParallelComm.ActivationMessageBytes(m, c);
        double embedTp = c.TensorParallel <= 1 ? 0
            : (c.SequenceParallel ? Collectives.ReduceScatter(S, tpGroup, gpu) : Collectives.AllReduce(S, tpGroup, gpu))
              + TensorParallelComm.PartialSyncEntry(m, c, cluster);
        double embed = ComputeTime.Embedding(m, c, gpu);

        // Last chunk: with SP the final hidden state is all-gathered before the logits GEMM (reduce-scattered back
        // in backward); the vocabulary-parallel cross-entropy all-reduces three per-token fp32 values.
        double tokens = (double)c.MicroBatch * m.SeqLength / c.ContextParallel;
        var (outF, outB) = ComputeTime.OutputLayer(m, c, gpu);
        double lossTp = c.TensorParallel <= 1 ? 0 : 3 * Collectives.AllReduce(tokens * 4, tpGroup, gpu);
        double gatherTp = c.SequenceParallel ? Collectives.AllGather(S, tpGroup, gpu) : 0;

        // Activations.
        Span<LayerTensor> tensors = stackalloc LayerTensor[Activations.MaxLayerTensors];
        tensors = tensors[..Activations.LayerTensors(m, c, tensors)];
        var act = Activations.Layer(m, c, tensors);
        double e = Activations.BytesPerElement(c.Precision);
        double sp = c.SequenceParallel ? c.TensorParallel : 1;
        double logits = tokens * m.VocabSize / c.TensorParallel;
        bool fusedLoss = ComputeTime.FusedCrossEntropy(c);
        double gradientBuffers = tokens * 2.0 * m.FfnHiddenSize / c.TensorParallel * e * 2;
        double recomputeWorkspace = r.Granularity == RecomputeGranularity.Full
            ? Activations.RecomputeWorkspace(act, r)
            : act.AllTensors - act.Saved;
        // Pipeline p2p: Megatron sends b·(s/cp)·h/t per TP rank (scatter-gather, or the SP shard). Without sequence
        // parallelism each TP rank sends only its 1/t slice (Narayanan et al. 2021, section 4.1, scatter/gather) and the
        // receiver all-gathers the full activation over NVLink before it can compute; without scatter/gather every TP rank
        // sends the whole activation over its own link.
        bool p2pSameNode = Topology.PipelineNeighboursShareNode(c, cluster.GpusPerNode);
        bool scatterGather = c.TensorParallel > 1 && !c.SequenceParallel && c.PipelineScatterGather;
        double p2p = p > 1 ? Collectives.SendRecv(c.SequenceParallel || scatterGather ? S / c.TensorParallel : S, p2pSameNode, gpu) : 0;
        double p2pGather = p > 1 && scatterGather ? Collectives.AllGather(S, tpGroup, gpu) : 0;

        double embedParams = ModelState.EmbeddingParametersPerRank(m, c.TensorParallel);
        double outParams = ModelState.OutputParametersPerRank(m, c.TensorParallel, p);
        double tiedSync = m.TiedEmbeddings && p > 1
            ? Collectives.SendRecv(4 * (double)m.VocabSize * m.HiddenSize / c.TensorParallel, false, gpu) : 0;
        // ZeRO 2 and 3: the embedding's and output layer's collectives, gathered first and reduced last or on their own,
        // are counted exposed.
        var embedZero = ZeroMicroBatchComm.EndCollectives(embedParams, c, cluster);
        var outZero = ZeroMicroBatchComm.EndCollectives(outParams, c, cluster);

        ChunkCosts Chunk(int layers, ReadOnlySpan<LayerTensor> tensors, double ahead = 0)
        {
            // Full recomputation repeats the forward (with its communication) of the recomputed layers.
            int recomputed = Flops.RecomputedLayers(c, layers);
            // A chunk without layers (the embedding or loss counted as its one layer) keeps none.
            double activations = layers > 0 ? layers * Activations.PerLayerKept(act, r, layers) : 0;
            // Megatron-core's CPU offloading (one chunk: p = 1): the first N layers' saved activations leave the GPU.
            activations -= Math.Min(layers, c.CpuOffloadingLayers) * act.Saved;
            // Megatron-Kwai's offload runs one chunk ahead and behind the compute stream: at any moment the offloaded
            // part of further chunks is still (or already again) on the GPU besides the chunk in use.
            var offload = Offload.Chunk(tensors, c, layers, activations, ahead);
            double parameters = layers * ModelState.LayerParametersPerRank(m, c.TensorParallel);
            double forward = layers * layerForward + p2pGather;
            double backward = layers * (layer.Backward + layer.Recompute + tpB + cpBx) + recomputed * layerForward + p2pGather
                              + ComputeTime.GradientAccumulation(parameters, c, gpu);
            // ZeRO 2 and 3: every micro-batch's collectives beside the chunk's compute.
            var zero = ZeroMicroBatchComm.Collectives(parameters, c, cluster);
            var zeroExposed = ZeroMicroBatchComm.Exposed(zero, forward, backward, layers,
                ZeroMicroBatchComm.Buckets(parameters, layers, c), overlap.GradientReduce);
            double zeroForward = zeroExposed.Forward + NcclSmShare * (zero.Forward - zeroExposed.Forward);
            double zeroBackward = zeroExposed.Backward + NcclSmShare * (zero.Backward - zeroExposed.Backward);
            return new ChunkCosts(
                Layers: layers,
                Forward: forward + zeroForward,
                Backward: backward + zeroBackward,
                Compute: layers * (layer.Forward + layer.Backward),
                Recompute: layers * layer.Recompute + recomputed * layer.Forward,
                TensorParallel: layers * (tpF + tpB) + recomputed * tpF,
                ContextParallel: layers * (cpFx + cpBx) + recomputed * cpFx,
                DataParallel: zeroForward + zeroBackward,
                Activations: activations,
                Offloaded: offload.Offloaded,
                Stranded: offload.Stranded,
                OffloadTransfer: offload.Offloaded / gpu.HostLinkBytesPerSecond,
                GradientReduce: DataParallelComm.GradientReduce(parameters, c, cluster),
                OffloadRecorded: offload.Recorded);
        }

        // The first and last virtual stages may hold their own number of layers (uneven stages; the embedding or loss
        // counted as a layer); a middle one is virtual stage 1 where there are three or more.
        int middleStage = p * v >= 3 ? 1 : 0;
        int firstLayers = c.LayersInChunk(m, 0, 0), lastLayers = c.LayersInChunk(m, p - 1, v - 1);
        int middleLayers = c.LayersInChunk(m, middleStage % p, middleStage / p);
        var middle = Chunk(middleLayers, tensors);
        int cpuLayers = c.CpuOffloadingLayers;
        double cpuCopy = act.Saved / gpu.HostLinkBytesPerSecond;
        // The embedding's dropout mask, a byte per element, kept by the first chunk and cut with its activations by Kwai's offload.
        double embeddingMask = m.HiddenDropout > 0 ? tokens * m.HiddenSize / sp : 0;
        bool maskCut = c.OffloadRatio > 0 && embeddingMask > 0;
        ChunkCosts? firstChunk = firstLayers != middleLayers || maskCut ? Chunk(firstLayers, tensors, maskCut ? embeddingMask : 0) : null;
        ChunkCosts? lastChunk = lastLayers != middleLayers ? Chunk(lastLayers, tensors) : null;

        RankCosts Rank(int rank, double after)
        {
            double parameters = ModelState.RankParameters(m, c, rank);
            // Stage 3 gathers its layers with each micro-batch; what remains for the step's end is Megatron-FSDP's ends.
            double gathered = c.ZeroStage >= 3 ? ModelState.EndParameters(m, c, rank) : parameters;
            return new RankCosts(parameters, ModelState.RankBytes(m, c, rank), OptimizerTime.Step(parameters, c, gpu),
                DataParallelComm.ParameterGather(gathered, c, cluster, c.LayersOnRank(m, rank) * layerForward), after);
        }

        return new PipelineCosts
        {
            P = p, V = v, M = c.NumMicroBatches,
            Chunk = middle,
            FirstStageChunk = firstChunk,
            LastStageChunk = lastChunk,
            FirstForwardExtra = embed + embedTp - p2pGather     // the first stage receives nothing forward
                                + embedZero.Forward,
            FirstBackwardExtra = embed + embedTp + ComputeTime.GradientAccumulation(embedParams, c, gpu) + embedZero.Backward,
            FirstExtraTensorParallel = 2 * embedTp,
            FirstExtraDataParallel = embedZero.Forward + embedZero.Backward,
            LastForwardExtra = outF + gatherTp + lossTp + outZero.Forward,
            LastBackwardExtra = outB + gatherTp - p2pGather      // nor the last stage backward
                                + ComputeTime.GradientAccumulation(outParams, c, gpu) + outZero.Backward,
            LastExtraTensorParallel = 2 * gatherTp + lossTp,
            LastExtraDataParallel = outZero.Forward + outZero.Backward,
            P2p = p2p,
            P2pOverlapped = c.PipelineP2pHidden,
            OffloadRatio = c.OffloadRatio,
            FirstExtraActivations = embeddingMask,
            // Final norm in/out; Megatron's fp32 softmax, or the bf16 logits the executor's fused cross-entropy keeps.
            LastExtraActivations = 2 * tokens * m.HiddenSize * e / sp + (fusedLoss ? e : 4) * logits,
            // Under CPU offloading one offloaded layer is back at a time ahead of its backward (its reload starts when backward
            // reaches its window).
            BackwardTransient = recomputeWorkspace + gradientBuffers + middle.Offloaded * (OffloadWindowChunks - 1) + (cpuLayers > 0 ? act.Saved : 0),
            CpuOffloadForwardStall = cpuLayers > 0 ? CpuOffloading.Stall(m.NumLayers, cpuLayers, middle.Forward / middle.Layers, cpuCopy) : 0,
            CpuOffloadBackwardStall = cpuLayers > 0 ? CpuOffloading.Stall(m.NumLayers, cpuLayers, middle.Backward / middle.Layers, cpuCopy) : 0,
            // Megatron's vocabulary-parallel cross-entropy (megatron/core/tensor_parallel/cross_entropy.py) casts the logits to
            // fp32, turns that copy into the softmax in place and saves it (counted above); beside it, while the loss forms,
            // the bf16 logits. The executor's fused loss reads the logits it keeps and writes a float per token.
            LastForwardTransient = fusedLoss ? 0 : e * logits,
            // The vocabulary-parallel embedding's backward materializes a dense V/t x h weight gradient in the
            // parameter dtype before it is added to the fp32 main gradient.
            FirstBackwardTransient = e * m.VocabSize * m.HiddenSize / c.TensorParallel,
            // Its backward writes the logits' gradient into the saved softmax in place (prepare_gradient_calculation_operands:
            // grad_input = softmax); the output layer casts it to the parameter dtype (tensor_parallel/layers.py). The executor's
            // fused loss writes the bf16 gradient beside the logits it kept: the same bytes.
            LastBackwardTransient = e * logits,
            FirstExtraGradientReduce = DataParallelComm.GradientReduce(embedParams, c, cluster),
            LastExtraGradientReduce = DataParallelComm.GradientReduce(outParams, c, cluster),
            GradientReduceOverlapped = overlap.GradientReduce,
            First = Rank(0, tiedSync),
            Middle = Rank(Math.Min(1, p - 1), 0),
            Last = Rank(p - 1, tiedSync),
        };
    }
}
