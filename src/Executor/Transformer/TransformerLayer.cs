using Harness.Executor.Offload;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Transformer;

/// <summary>A pre-norm decoder layer (Megatron-core transformer/transformer_layer.py): x + dropout(attn(norm(x))), then
/// + dropout(mlp(norm(x))). Under Megatron-Kwai's --kaimm-recompute-norm each norm runs inside the first linear of its
/// block, which keeps the norm's input rather than its output (kwai/Megatron-Kwai atc24ae, megatron/model/transformer.py:
/// the layer passes norm_input and norm_module to the attention and the MLP instead of the norm's output).</summary>
public sealed class TransformerLayer : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> input_layernorm, pre_mlp_layernorm;
    private readonly SelfAttention self_attention;
    private readonly Mlp mlp;
    private readonly double hiddenDropout;
    private readonly DropoutRng? dropout;
    private readonly bool recomputeNorm;
    // A flag, not a second field holding the norm: RegisterComponents would register that field as another submodule.
    private readonly bool addNorm;

    /// <param name="layer">The layer's number in the serial model, which names its weights (<see cref="WeightKey"/>).</param>
    public TransformerLayer(TransformerConfig config, RotaryEmbedding? rotary, int layer) : base(nameof(TransformerLayer))
    {
        var m = config.Model;
        input_layernorm = Norms.Create(m.Normalization, m.HiddenSize, m.NormEpsilon, config.ComputeDtype, config.Device, config.FusedNorm);
        self_attention = new SelfAttention(config, rotary, layer);
        pre_mlp_layernorm = Norms.Create(m.Normalization, m.HiddenSize, m.NormEpsilon, config.ComputeDtype, config.Device, config.FusedNorm);
        mlp = new Mlp(config, layer);
        (hiddenDropout, dropout) = (config.HiddenDropout, config.Dropout);
        recomputeNorm = config.RecomputeOrNone.NormOutputs;
        // The fused residual add + norm takes the MLP's norm, unless the norm runs inside linear_fc1: LayerNorm's from the GPT
        // path's kernels, RMSNorm's from the Llama path's.
        addNorm = !recomputeNorm && (pre_mlp_layernorm is LayerNormalization ? config.UseFusedGptKernels : config.UseFusedKernels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // Each norm's input is saved (by the norm, or by the linear that recomputes it), its output by the linear after it.
        SavedActivations.Save(x);
        var attention = recomputeNorm ? self_attention.forward(x, input_layernorm.forward) : self_attention.forward(SavedActivations.Save(input_layernorm.forward(x)));
        Tensor h, mlpOutput;
        if (addNorm)
        {
            // Attention's dropout as before (the same masks), then the residual add and the MLP's norm in one kernel.
            (var normalized, h) = ((IResidualNorm)pre_mlp_layernorm).AddForward(x, Drop(attention));
            SavedActivations.Save(h);
            mlpOutput = mlp.forward(SavedActivations.Save(normalized));
        }
        else
        {
            h = SavedActivations.Save(x.Plus(Drop(attention)));
            mlpOutput = recomputeNorm ? mlp.forward(h, pre_mlp_layernorm.forward) : mlp.forward(SavedActivations.Save(pre_mlp_layernorm.forward(h)));
        }
        return h.Plus(Drop(mlpOutput)).MoveToOuterDisposeScope();
    }

    /// <summary>Megatron's bias-dropout-add: dropout on a sublayer's output (its bias included) before the residual add.</summary>
    private Tensor Drop(Tensor y) => DropoutRng.Rate(dropout, hiddenDropout) is > 0 and var p ? DropoutOp.Apply(y, p, dropout!.NextHidden()) : y;
}
