using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>A pre-norm decoder layer (Megatron-core transformer/transformer_layer.py): x + dropout(attn(norm(x))), then
/// + dropout(mlp(norm(x))).</summary>
public sealed class TransformerLayer : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> input_layernorm, pre_mlp_layernorm;
    private readonly SelfAttention self_attention;
    private readonly Mlp mlp;
    private readonly double hiddenDropout;
    private readonly DropoutRng? dropout;

    public TransformerLayer(TransformerConfig config, RotaryEmbedding? rotary) : base(nameof(TransformerLayer))
    {
        var m = config.Model;
        input_layernorm = Norms.Create(m.Normalization, m.HiddenSize, config.ComputeDtype, config.Device);
        self_attention = new SelfAttention(config, rotary);
        pre_mlp_layernorm = Norms.Create(m.Normalization, m.HiddenSize, config.ComputeDtype, config.Device);
        mlp = new Mlp(config);
        (hiddenDropout, dropout) = (config.HiddenDropout, config.Dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + Drop(self_attention.forward(input_layernorm.forward(x)));
        return (h + Drop(mlp.forward(pre_mlp_layernorm.forward(h)))).MoveToOuterDisposeScope();
    }

    /// <summary>Megatron's bias-dropout-add: dropout on a sublayer's output (its bias included) before the residual add.</summary>
    private Tensor Drop(Tensor y) => dropout is null || hiddenDropout <= 0 ? y : DropoutOp.Apply(y, hiddenDropout, dropout.NextHidden());
}
