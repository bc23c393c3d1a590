using static TorchSharp.torch;

namespace Harness.Executor.Transformer;

/// <summary>A pre-norm decoder layer (Megatron-core transformer/transformer_layer.py): x + attn(norm(x)), then + mlp(norm(x)).</summary>
public sealed class TransformerLayer : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> input_layernorm, pre_mlp_layernorm;
    private readonly SelfAttention self_attention;
    private readonly Mlp mlp;

    public TransformerLayer(TransformerConfig config, RotaryEmbedding? rotary) : base(nameof(TransformerLayer))
    {
        var m = config.Model;
        input_layernorm = Norms.Create(m.Normalization, m.HiddenSize, config.ComputeDtype, config.Device);
        self_attention = new SelfAttention(config, rotary);
        pre_mlp_layernorm = Norms.Create(m.Normalization, m.HiddenSize, config.ComputeDtype, config.Device);
        mlp = new Mlp(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attention.forward(input_layernorm.forward(x));
        return (h + mlp.forward(pre_mlp_layernorm.forward(h))).MoveToOuterDisposeScope();
    }
}
