using Harness.Executor.Native;
using Harness.Executor.TensorParallel;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>A biased linear of one rank under gradient-accumulation fusion (bf16, a float32 main gradient; the CPU form of
/// the weight-gradient GEMM): the GEMM adds the bias, as libtorch's linear does without fusion, so the output is
/// nn.functional.linear's to the bit; backward gives the input's gradient dy·W and the bias's, dy summed over the tokens,
/// and adds dyᵀ·x into the main gradient, leaving the weight without a gradient of its own.</summary>
public class LinearWithGradAccumulationTests
{
    [Fact]
    public void TheGemmAddsTheBiasAndBackwardGivesItsGradient()
    {
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        using var generator = new Generator(11);
        var weight = randn([24, 16], generator: generator).to(ScalarType.BFloat16);
        using var linear = new DenseLinear(weight.clone(), bias: true);
        var bias = linear.parameters().Single(p => p.shape.Length == 1);
        using (no_grad()) bias.copy_(randn([24], generator: generator).to(ScalarType.BFloat16));
        var main = zeros(24, 16);
        linear.AccumulateInto(main);
        var x = randn([2, 5, 16], generator: generator).to(ScalarType.BFloat16).requires_grad_(true);
        var dy = randn([2, 5, 24], generator: generator).to(ScalarType.BFloat16);

        var y = linear.forward(x);
        Assert.True(y.eq(nn.functional.linear(x.detach(), weight, bias.detach())).all().item<bool>(), "the output is not libtorch's linear with the bias");
        y.backward([dy]);

        var dy2 = dy.reshape(-1, 24).to(ScalarType.Float32);
        var x2 = x.detach().reshape(-1, 16).to(ScalarType.Float32);
        Assert.True(bias.grad!.eq(dy.reshape(-1, 24).sum(dim: 0)).all().item<bool>(), "the bias's gradient is not dy summed over the tokens");
        Assert.True(x.grad!.to(ScalarType.Float32).allclose(dy2.mm(weight.to(ScalarType.Float32)).reshape(2, 5, 16), rtol: 1e-2, atol: 1e-2));
        Assert.True(main.allclose(dy2.t().mm(x2), rtol: 1e-5, atol: 1e-5), "the main gradient is not dyᵀ·x");
        Assert.Null(linear.Weight.grad);
    }
}
