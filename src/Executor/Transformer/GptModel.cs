using Harness.Executor.Offload;
using TorchSharp;
using Harness.Executor.Fused;
using Harness.Simulator.Specs;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Transformer;

/// <summary>
/// A decoder-only language model from a <see cref="ModelSpec"/> (Megatron-core models/gpt/gpt_model.py): GPT
/// (learned positions, LayerNorm, GeLU, tied output) and Llama (rotary, RMSNorm, SwiGLU, untied) are the same
/// class. Every linear, the vocabulary tables and the loss come from <see cref="TransformerConfig.TensorParallel"/>
/// (the seam: see ITensorParallel). <see cref="Embed"/>, <see cref="Decode"/> and <see cref="Loss"/> are the
/// pieces a pipeline stage composes (pre_process, layers, post_process); <see cref="forward"/> runs them all.
/// Tensors are batch-first: tokens [b, s], hidden [b, s, h].
/// </summary>
public sealed class GptModel : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly TransformerConfig config;
    private readonly Parameter? word_embeddings;
    private readonly Parameter? position_embeddings;
    private readonly ModuleList<TransformerLayer> layers;
    private readonly nn.Module<Tensor, Tensor>? final_layernorm;
    private readonly Parameter? output_layer;
    private readonly RotaryEmbedding? rotary;
    private readonly IReadOnlyList<LayerGroup> groups;

    /// <param name="chunk">The layers and ends this model holds as a pipeline model chunk; null: the whole model.</param>
    public GptModel(TransformerConfig config, PipelineChunk? chunk = null) : base(nameof(GptModel))
    {
        this.config = config;
        var m = config.Model;
        var tp = config.TensorParallel;
        var c = chunk ?? PipelineChunk.Whole(m);
        // The last chunk of a pipeline keeps its own copy of a tied word embedding (Megatron's shared output weight).
        if (c.PreProcess || (c.PostProcess && m.TiedEmbeddings))
            word_embeddings = tp.VocabParallelWeight(m.VocabSize, m.HiddenSize, config.Init(new(WeightRole.WordEmbeddings)));
        if (m.PositionEmbedding == PositionEmbedding.Learned)
        {
            if (c.PreProcess) position_embeddings = new Parameter(config.Init(new(WeightRole.PositionEmbeddings))([m.PositionTableRows, m.HiddenSize]));
        }
        else
            rotary = new RotaryEmbedding(m.HeadDim, m.SeqLength, config.ComputeDtype, config.Device, m.RotaryBase);
        layers = new ModuleList<TransformerLayer>(Enumerable.Range(0, c.NumLayers).Select(i => new TransformerLayer(config, rotary, c.FirstLayer + i)).ToArray());
        groups = RecomputeGroups.Of(c.NumLayers, config.RecomputeOrNone);
        if (c.PostProcess)
        {
            final_layernorm = Norms.Create(m.Normalization, m.HiddenSize, m.NormEpsilon, config.ComputeDtype, config.Device, config.FusedNorm);
            if (!m.TiedEmbeddings) output_layer = tp.VocabParallelWeight(m.VocabSize, m.HiddenSize, config.Init(new(WeightRole.OutputLayer)));
        }
        RegisterComponents();
    }

    public ModelSpec Spec => config.Model;

    /// <summary>Word (plus learned position) embeddings of tokens [b, s]; with the GPT path's fused kernels, one kernel
    /// gathers the words and adds the positions (<see cref="ITensorParallel.FusedEmbeddingLookup"/>).</summary>
    public Tensor Embed(Tensor tokens)
    {
        var tp = config.TensorParallel;
        Tensor h;
        if (position_embeddings is not null && config.UseFusedGptKernels && FusedKernels.Applies(position_embeddings))
        {
            h = tp.FusedEmbeddingLookup(tokens, word_embeddings!, position_embeddings,
                config.ContextParallel?.Positions(tokens.shape[1], tokens.device) ?? Positions(0, tokens.shape[1], tokens.device));
        }
        else
        {
            h = tp.EmbeddingLookup(tokens, word_embeddings!);
            if (position_embeddings is not null)
                h = h.Plus(config.ContextParallel is { } cp
                    ? position_embeddings.index_select(0, cp.Positions(tokens.shape[1], tokens.device))
                    : position_embeddings[..(int)tokens.shape[1]]);
        }
        // Megatron's embedding dropout, after the sequence-parallel scatter (on this rank's block, from its own stream).
        h = tp.EnterDecoder(h);
        return DropoutRng.Rate(config.Dropout, config.HiddenDropout) is > 0 and var p ? DropoutOp.Apply(h, p, config.Dropout!.NextHidden(), saved: true) : h;
    }

    /// <summary>The decoder layers, group by group (<see cref="RecomputeGroups"/>: under full recomputation a group keeps only its
    /// input and runs again in backward), and the final norm. Between layers the residual stream passes unsummed (the
    /// previous layer's residual and its MLP's output, <see cref="TransformerLayer.Forward(Tensor, ResidualDelta?)"/>), so that the
    /// next input norm, or the final norm, adds it in its own kernel; a recomputed group and a chunk without the final norm
    /// (a pipeline stage's output) take and give the sum.</summary>
    /// <param name="atLayerInput">Applied to the input of layer i (i = the number of layers: the final norm's input) when
    /// given: where data-parallel gradient sync marks that backward has passed a layer, and where the forward waits for the
    /// layer's gathered weights. A recomputed group's layers are all applied at the group's input, outside the recomputed
    /// function: their weights are waited for before the group runs, and their gradients are final once backward has
    /// passed the group (the recomputation computes them before the group's input gradient). With the residual unsummed it
    /// applies to the residual part. Backward reaches it after the whole of layer i: the input add is layer i's first
    /// operation forward, so its backward is the last. The delta's gradient goes from that add to layer i − 1's MLP without
    /// passing it; layer i − 1's backward still runs after it, because libtorch's engine takes ready nodes in decreasing
    /// sequence number (torch/csrc/autograd/engine.cpp, ReadyQueue's CompareNodeTaskTime) and the hook's node is made after
    /// every node of layer i − 1, as it was when the hook sat on the sum. Callbacks that must run before layer i − 1's
    /// backward (ZeRO 3's release and fetch, the offload's reload) rely on that order.</param>
    public Tensor Decode(Tensor hidden, Func<Tensor, int, Tensor>? atLayerInput = null)
    {
        ResidualDelta? delta = null;
        foreach (var group in groups)
        {
            if (atLayerInput is not null)
                for (int i = group.First; i < group.First + group.Count; i++) hidden = atLayerInput(hidden, i);
            if (group.Recomputed)
            {
                hidden = CheckpointFunction.Apply(x => Summed(Run(group, x[0], null)), config.Dropout, SavedActivations.Save(Summed((hidden, delta))));
                delta = null;
            }
            else (hidden, delta) = Run(group, hidden, delta);
        }
        if (atLayerInput is not null) hidden = atLayerInput(hidden, layers.Count);
        if (final_layernorm is null) return Summed((hidden, delta));
        if (delta is not null && TransformerLayer.FusesResidualNorms(config))
            using (delta)
                return ((IResidualNorm)final_layernorm).AddForward(hidden, delta.Value, delta.Dropout).Normalized;
        return final_layernorm.forward(Summed((hidden, delta)));
    }

    private (Tensor Residual, ResidualDelta? Delta) Run(LayerGroup group, Tensor hidden, ResidualDelta? delta)
    {
        for (int i = group.First; i < group.First + group.Count; i++)
        {
            var consumed = delta;
            (hidden, delta) = layers[i].Forward(hidden, delta);
            consumed?.Dispose();
        }
        return (hidden, delta);
    }

    /// <summary>The residual stream's sum; the delta, a layer's MLP output that autograd does not keep (an add saves nothing),
    /// is released once added, as a layer that summed its own output released it. A residual may be the caller's input
    /// (a pipeline stage's received activation, whose gradient it reads), so it is left alone.</summary>
    private static Tensor Summed((Tensor Residual, ResidualDelta? Delta) stream)
    {
        using (stream.Delta) return TransformerLayer.Sum(stream.Residual, stream.Delta);
    }

    /// <summary>Mean next-token cross-entropy (float32) of the decoded hidden states against labels [b, s]; on one
    /// tensor-parallel rank with fused kernels, straight from the bf16 logits (<see cref="CrossEntropyFunction"/>).</summary>
    public Tensor Loss(Tensor hidden, Tensor labels)
    {
        var tp = config.TensorParallel;
        var logits = tp.Logits(hidden, output_layer ?? word_embeddings!);
        bool fused = config.UseFusedKernels && tp.WorldSize == 1 && FusedKernels.Applies(logits);
        return (fused ? CrossEntropyFunction.Apply(logits, labels) : tp.CrossEntropy(logits, labels)).mean();
    }

    /// <summary>The loss of one micro-batch: tokens and labels [b, s].</summary>
    public override Tensor forward(Tensor tokens, Tensor labels)
    {
        using var scope = NewDisposeScope();
        return Loss(Decode(Embed(tokens)), labels).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) rotary?.Dispose();
        base.Dispose(disposing);
    }
}
