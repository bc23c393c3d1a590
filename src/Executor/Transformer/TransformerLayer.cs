using Harness.Simulator.Specs;
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
        addNorm = FusesResidualNorms(config);
        RegisterComponents();
    }

    /// <summary>
    /// Whether the residual adds are fused with the norms after them (<see cref="IResidualNorm"/>): LayerNorm's from the GPT
    /// path's kernels, RMSNorm's from the Llama path's; not under --kaimm-recompute-norm, whose norms run inside the linears
    /// after them. Each layer's attention residual with its MLP norm, and its MLP residual with the next layer's input norm
    /// (or the final norm) where the model passes the residual on unsummed (<see cref="Forward(Tensor, Tensor?)"/>).
    /// </summary>
    public static bool FusesResidualNorms(TransformerConfig config) =>
        !config.RecomputeOrNone.NormOutputs && (config.Model.Normalization == Normalization.LayerNorm ? config.UseFusedGptKernels : config.UseFusedKernels);

    public override Tensor forward(Tensor x)
    {
        var (residual, delta) = Forward(x, null);
        using (residual)
        using (delta)
            return delta.AddTo(residual);
    }

    /// <summary>
    /// The layer on the residual stream <paramref name="hidden"/> + <paramref name="delta"/> (null: <paramref name="hidden"/>
    /// alone), its output returned unsummed, as (residual, delta) with output = residual + dropout(delta): the add is left to
    /// the next layer's input norm or the final norm, which fuse it where <see cref="FusesResidualNorms"/> (Megatron-core and
    /// Transformer Engine fuse the residual with the next norm alike), the hidden dropout with it (Megatron's
    /// bias-dropout-add); elsewhere it is libtorch's dropout and add, the same operations in the same order as a layer that
    /// summed its own output. Both hidden dropouts are drawn where Megatron draws them, after their sublayer.
    /// </summary>
    public (Tensor Residual, ResidualDelta Delta) Forward(Tensor hidden, ResidualDelta? delta)
    {
        using var scope = NewDisposeScope();
        // Each norm's input is saved (by the norm, or by the linear that recomputes it), its output by the linear after it.
        Tensor x, attention;
        if (recomputeNorm)
        {
            x = SavedActivations.Save(Sum(hidden, delta));
            attention = self_attention.forward(x, input_layernorm.forward);
        }
        else
        {
            var (normalized, sum) = delta is not null && addNorm ? ((IResidualNorm)input_layernorm).AddForward(hidden, delta.Value, delta.Dropout) : Normalize(hidden, delta);
            x = SavedActivations.Save(sum);
            attention = self_attention.forward(SavedActivations.Save(normalized));
        }
        Tensor h, mlpOutput;
        if (addNorm)
        {
            // Attention's dropout, the residual add and the MLP's norm in one kernel.
            (var normalized, h) = ((IResidualNorm)pre_mlp_layernorm).AddForward(x, attention, NextDropout());
            SavedActivations.Save(h);
            mlpOutput = mlp.forward(SavedActivations.Save(normalized));
        }
        else
        {
            h = SavedActivations.Save(ResidualDelta.Add(x, attention, NextDropout()));
            mlpOutput = recomputeNorm ? mlp.forward(h, pre_mlp_layernorm.forward) : mlp.forward(SavedActivations.Save(pre_mlp_layernorm.forward(h)));
        }
        return (h.MoveToOuterDisposeScope(), new ResidualDelta(mlpOutput.MoveToOuterDisposeScope(), NextDropout()));
    }

    /// <summary>(input norm of the sum, the sum) through libtorch's add and the norm.</summary>
    private (Tensor Normalized, Tensor Sum) Normalize(Tensor hidden, ResidualDelta? delta)
    {
        var sum = Sum(hidden, delta);
        return (input_layernorm.forward(sum), sum);
    }

    /// <summary>The residual stream <paramref name="hidden"/> + <paramref name="delta"/> as one tensor (libtorch's dropout and add).</summary>
    internal static Tensor Sum(Tensor hidden, ResidualDelta? delta) => delta is null ? hidden : delta.AddTo(hidden);

    /// <summary>Megatron's bias-dropout-add: the hidden dropout of a sublayer's output (its bias included), drawn now and
    /// applied where the output is added to the residual stream.</summary>
    private PendingDropout? NextDropout() => PendingDropout.Next(dropout, hiddenDropout);
}
