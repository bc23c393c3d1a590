using TorchSharp;
using Harness.Executor.Autograd;
using Harness.Executor.DataParallel;
using Harness.Executor.Offload;
using Harness.Executor.Transformer;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.PipelineParallel;

/// <summary>One model chunk of this pipeline rank: the module and which ends of the model it holds.</summary>
public sealed record ModelChunk(GptModel Model, PipelineChunk Part);

/// <summary>
/// Megatron's forward_backward_func: runs one iteration's micro-batches through this rank's model chunks in the
/// order of <see cref="PipelineSchedule"/>, receiving each chunk's input from the previous stage and sending its
/// output to the next, and the gradients the other way. Without pipeline parallelism (one rank, one chunk) it is
/// forward, backward, forward, backward. Each micro-batch's loss is divided by the number of micro-batches, so
/// the accumulated gradients are those of the mean loss.
/// </summary>
public static class PipelineExecutor
{
    /// <param name="microBatch">Tokens and labels [b, s] of micro-batch i, on the device.</param>
    /// <param name="activationShape">What travels between stages: [b, s, h] of this rank's sequence block.</param>
    /// <param name="gradSync">Folds each micro-batch's bf16 gradients into float32 after its backward, and with overlap
    /// marks the layers of each chunk's last micro-batch so their gradients are reduced as backward passes them.</param>
    /// <param name="paramGather">With --overlap-param-gather: what each chunk's first micro-batch waits for before each
    /// layer (the weights the last step's all-gathers bring).</param>
    /// <param name="zero3">Under ZeRO 3, one per chunk: gathers and frees each unit's weights around its forward and backward.</param>
    /// <param name="lossScale">What the last stage's backward starts from, times the loss (Megatron's backward_step applies
    /// the optimizer's loss scale there); the other stages receive gradients scaled by it.</param>
    /// <param name="offload">Megatron-Kwai's activation offload, when on: each chunk's saved activations recorded in its
    /// forward, partly offloaded after it and brought back before its backward; disposed here.</param>
    /// <param name="layerOffload">Megatron-core's CPU offloading, when on: a new <see cref="LayerOffloader"/> for each forward,
    /// whose backward brings the layers' activations back; each one's bytes go to <paramref name="offloaded"/>.</param>
    /// <returns>The mean loss over the micro-batches on the rank holding the last stage (detached, unscaled); null elsewhere.</returns>
    public static Tensor? ForwardBackward(IReadOnlyList<ModelChunk> chunks, P2PCommunication? p2p, int microBatches,
        Func<int, (Tensor Tokens, Tensor Labels)> microBatch, long[] activationShape, ScalarType dtype, Device device,
        GradientSync gradSync, ParamGather? paramGather = null, IReadOnlyList<PartitionedParamCoordinator>? zero3 = null, double lossScale = 1,
        ActivationOffloader? offload = null, Func<LayerOffloader>? layerOffload = null, List<OffloadRecord>? offloaded = null)
    {
        int size = p2p?.Size ?? 1, rank = p2p?.Rank ?? 0;
        var alive = new Dictionary<(int Micro, int Chunk), (Tensor? Input, Tensor Output)>();
        var layersOffloaded = new Dictionary<(int Micro, int Chunk), LayerOffloader>();
        Tensor? lossSum = null;
        var order = PipelineSchedule.Order(size, rank, chunks.Count, microBatches);
        // Numbers as Scalars held until the calls return (HeldScalars says why).
        using Scalar perMicroBatch = microBatches.ToScalar(), scaleScalar = lossScale.ToScalar();
        try
        {
            for (int i = 0; i < order.Count; i++)
            {
                var op = order[i];
                var chunk = chunks[op.Chunk];
                if (op.Forward)
                {
                    using var scope = NewDisposeScope();
                    Tensor? input = chunk.Part.PreProcess ? null
                        : p2p!.RecvForward(activationShape, dtype, device).requires_grad_(true);
                    var (tokens, labels) = microBatch(op.MicroBatch);
                    bool marked = gradSync.Marks(op.MicroBatch == microBatches - 1);
                    // The first micro-batch waits, layer by layer, for the weights the last step's all-gathers bring.
                    var gather = op.MicroBatch == 0 ? paramGather : null;
                    gather?.WaitFor(op.Chunk, 0);
                    var units = zero3?[op.Chunk];
                    var layers = layerOffload?.Invoke();
                    if (layers is not null) layersOffloaded[(op.MicroBatch, op.Chunk)] = layers;
                    Func<Tensor, int, Tensor>? atLayerInput = gather is null && !marked && units is null && layers is null ? null : (h, layer) =>
                    {
                        gather?.WaitFor(op.Chunk, layer);
                        if (units is not null) h = units.AtLayerInput(h, layer);
                        h = marked ? gradSync.Mark(h, op.Chunk, layer) : h;
                        return layers?.AtLayerInput(h, layer) ?? h;
                    };
                    units?.BeforeEmbedding();
                    var saved = offload is null ? null : new SavedActivations();
                    Tensor hidden;
                    using (saved?.Record()) hidden = chunk.Model.Decode(input ?? chunk.Model.Embed(tokens), atLayerInput);
                    Tensor output;
                    if (chunk.Part.PostProcess)
                    {
                        output = chunk.Model.Loss(hidden, labels).div(perMicroBatch);
                        var detached = output.detach();
                        lossSum = lossSum is null ? detached.clone().DetachFromDisposeScope() : lossSum.add_(detached, One);
                    }
                    else
                    {
                        output = hidden;
                        p2p!.SendForward(hidden);
                    }
                    alive[(op.MicroBatch, op.Chunk)] = (input?.DetachFromDisposeScope(), output.DetachFromDisposeScope());
                    if (saved is not null) offload!.AfterForward(op.MicroBatch, op.Chunk, saved, !chunk.Part.PostProcess);
                }
                else
                {
                    using var scope = NewDisposeScope();
                    var (input, output) = alive[(op.MicroBatch, op.Chunk)];
                    alive.Remove((op.MicroBatch, op.Chunk));
                    offload?.BeforeBackward(op.MicroBatch, op.Chunk, NextBackward(order, i));
                    zero3?[op.Chunk].BeforeBackward();
                    if (chunk.Part.PostProcess) BackwardFailure.Run(() => (lossScale == 1 ? output : output.mul(scaleScalar)).backward());
                    else
                    {
                        var grad = p2p!.RecvBackward(activationShape, dtype, device);
                        BackwardFailure.Run(() => autograd.backward([output], [grad]));
                    }
                    zero3?[op.Chunk].AfterBackward();
                    gradSync.AfterBackward();
                    if (input is not null) p2p!.SendBackward(input.grad!);
                    input?.Dispose();
                    output.Dispose();
                    offload?.AfterBackward(op.MicroBatch, op.Chunk);
                    if (layersOffloaded.Remove((op.MicroBatch, op.Chunk), out var layers))
                    {
                        offloaded?.AddRange(layers.Records(op.MicroBatch));
                        layers.Dispose();
                    }
                }
            }
            p2p?.Flush();
            return lossSum;
        }
        finally
        {
            foreach (var (input, output) in alive.Values)
            {
                input?.Dispose();
                output.Dispose();
            }
            offload?.Dispose();
            foreach (var layers in layersOffloaded.Values) layers.Dispose();
        }
    }

    /// <summary>The micro-batch and chunk of the first backward after operation <paramref name="i"/>; null if none.</summary>
    private static (int Micro, int Chunk)? NextBackward(IReadOnlyList<PipelineOp> order, int i)
    {
        for (int j = i + 1; j < order.Count; j++)
            if (!order[j].Forward) return (order[j].MicroBatch, order[j].Chunk);
        return null;
    }

    /// <summary>
    /// Megatron's forward_only (evaluation): the schedule's forward passes alone, under no_grad, each chunk receiving its input
    /// from the previous stage and sending its output to the next. The caller holds every weight (ZeRO 3's units gathered).
    /// </summary>
    /// <returns>The mean loss over the micro-batches on the rank holding the last stage; null elsewhere.</returns>
    public static Tensor? Forward(IReadOnlyList<ModelChunk> chunks, P2PCommunication? p2p, int microBatches,
        Func<int, (Tensor Tokens, Tensor Labels)> microBatch, long[] activationShape, ScalarType dtype, Device device)
    {
        int size = p2p?.Size ?? 1, rank = p2p?.Rank ?? 0;
        using var _ = no_grad();
        Tensor? lossSum = null;
        using var perMicroBatch = microBatches.ToScalar();   // held until the calls return (HeldScalars says why)
        foreach (var op in PipelineSchedule.Order(size, rank, chunks.Count, microBatches).Where(o => o.Forward))
        {
            using var scope = NewDisposeScope();
            var chunk = chunks[op.Chunk];
            var (tokens, labels) = microBatch(op.MicroBatch);
            var hidden = chunk.Model.Decode(chunk.Part.PreProcess ? chunk.Model.Embed(tokens) : p2p!.RecvForward(activationShape, dtype, device));
            if (!chunk.Part.PostProcess) p2p!.SendForward(hidden);
            else
            {
                var loss = chunk.Model.Loss(hidden, labels).to(ScalarType.Float32).div(perMicroBatch);
                lossSum = lossSum is null ? loss.DetachFromDisposeScope() : lossSum.add_(loss, One);
            }
        }
        p2p?.Flush();
        return lossSum;
    }
}
