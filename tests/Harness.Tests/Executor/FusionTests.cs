using Harness.Simulator.Specs;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Executor.Training;
using Harness.Executor.Transformer;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// The fusions' CPU-side logic: the gradient buffer's layout and folding under gradient-accumulation fusion, its
/// gradients against the unfused path, and what happens where the CUDA kernels cannot load. The CUDA kernels
/// themselves are checked on a GPU by `harness kernel-check` (no GPU in CI).
/// </summary>
[Collection("training")]
public class FusionTests
{
    [Fact]
    public void FusedLinearWeightsKeepTheirPlaceGetNoAutogradGradientAndAreNotFolded()
    {
        TorchRuntime.Initialize();
        var spec = ModelTests.Tiny();
        var buffers = new[] { false, true }.Select(fusion =>
        {
            var model = new GptModel(new TransformerConfig(spec, CPU, ScalarType.BFloat16, SerialTensorParallel.Instance, InitSeed: 3));
            return (Model: model, Buffer: new ParamAndGradBuffer(model, ScalarType.BFloat16, gradientAccumulationFusion: fusion));
        }).ToArray();
        var (unfused, (model, buffer)) = (buffers[0].Buffer, buffers[1]);
        // The same layout with and without fusion: checkpoints and data-parallel buckets do not depend on it.
        Assert.Equal(unfused.Layout.Select(e => (e.Name, e.Offset)), buffer.Layout.Select(e => (e.Name, e.Offset)));
        Assert.Equal(unfused.DecayedCount, buffer.DecayedCount);
        Assert.Equal(spec.TotalParameters - 2 * spec.NumLayers * spec.HiddenSize - spec.HiddenSize, buffer.DecayedCount); // norms are not decayed
        var linears = model.modules().OfType<IMainGradWeight>().ToList();
        // Per layer: QKV, attention output, fc1, fc2; the embedding and output tables are not linears.
        Assert.Equal(4 * spec.NumLayers, linears.Count);
        Assert.Equal(linears.Sum(l => l.Weight.numel()), buffer.FusedCount);
        Assert.All(linears, l => Assert.Null(l.Weight.grad));
        Assert.Equal([(0L, unfused.Count, 0L)], unfused.Folded);
        // The folds cover exactly the parameters that have an autograd gradient.
        var folded = buffer.Layout.Where(e => e.Parameter.grad is not null).Select(e => (e.Offset, e.Parameter.numel()));
        Assert.Equal(buffer.Count - buffer.FusedCount, buffer.Folded.Sum(r => r.Count));
        Assert.All(folded, p => Assert.Contains(buffer.Folded, r => r.Offset <= p.Item1 && p.Item1 + p.Item2 <= r.Offset + r.Count));
        // The bf16 gradients hold only those parameters, packed in buffer order.
        Assert.Equal(buffer.Count - buffer.FusedCount, buffer.Grads.numel());
        Assert.Equal(unfused.Count, unfused.Grads.numel());
        long packed = 0;
        foreach (var r in buffer.Folded)
        {
            Assert.Equal(packed, r.GradOffset);
            packed += r.Count;
        }
    }

    [Fact]
    public void GradientAccumulationFusionGivesTheUnfusedMainGradients()
    {
        TorchRuntime.Initialize();
        var probe = WeightGradient.Probe(CPU); // CPU forms the float32 product from copies; CUDA runs it in the GEMM
        Assert.True(probe is null, probe);
        var spec = ModelTests.Tiny();
        var grads = new[] { false, true }.Select(fusion =>
        {
            var model = new GptModel(new TransformerConfig(spec, CPU, ScalarType.BFloat16, SerialTensorParallel.Instance, InitSeed: 3));
            var buffer = new ParamAndGradBuffer(model, ScalarType.BFloat16, gradientAccumulationFusion: fusion);
            using var generator = new Generator(9);
            buffer.ZeroGrads();
            for (int micro = 0; micro < 2; micro++)
            {
                var tokens = randint(0, spec.VocabSize, new long[] { 2, spec.SeqLength + 1 }, generator: generator);
                model.forward(tokens[.., ..(int)spec.SeqLength], tokens[.., 1..]).backward();
                buffer.AccumulateMicroBatch();
            }
            // In one order, so the two layouts compare parameter by parameter.
            return model.named_parameters().ToDictionary(p => p.name,
                p => buffer.MainGrads.narrow(0, buffer.Layout.Single(e => e.Name == p.name).Offset, p.parameter.numel()).clone());
        }).ToArray();
        foreach (var (name, unfused) in grads[0])
        {
            // The unfused path rounds each micro-batch's weight gradient to bf16 before adding it (relative 2^-8);
            // the fused one accumulates the GEMM's float32 result.
            double scale = unfused.abs().max().item<float>();
            double error = (grads[1][name] - unfused).abs().max().item<float>();
            Assert.True(error <= scale / 64 + 1e-7, $"{name}: max error {error} against max {scale}");
        }
        Assert.True(grads[1].Values.Sum(g => g.abs().sum().item<float>()) > 0);
    }

    [Fact]
    public void WithoutAGpuTheKernelsSayWhyAndTrainingUsesLibtorch()
    {
        TorchRuntime.Initialize();
        string? reason = FusedKernels.Probe(0);
        if (File.Exists("/dev/nvidiactl")) return; // a GPU machine: the kernels may well load there
        Assert.NotNull(reason);
        Assert.Matches("libcuda|NVRTC|driver", reason);
        // CPU runs never ask for them: a CPU tensor never takes the fused path.
        Assert.False(FusedKernels.Applies(ones(2, dtype: ScalarType.BFloat16)));
    }

    [Fact]
    public void ProfileRangeIsValidatedInWords()
    {
        Assert.Empty(new ProfileRange(2, 4).Validate(ExecutionDevice.Cuda, 4));
        Assert.Contains(new ProfileRange().Validate(ExecutionDevice.Cpu, 20), e => e.Contains("--device cuda"));
        Assert.Contains(new ProfileRange(5, 5).Validate(ExecutionDevice.Cuda, 20), e => e.Contains("0 <= start < end"));
        Assert.Contains(new ProfileRange(10, 12).Validate(ExecutionDevice.Cuda, 11), e => e.Contains("past --train-iters 11"));
    }
}

public class GradientHandOverTests
{
    [Fact]
    public void IncomingGradientsAreReleasedAtOnceAndReturnedOnesAtTheNextHandOver()
    {
        Harness.Executor.Native.TorchRuntime.Initialize();
        // A fresh thread: the hand-over keeps one function's gradients per thread.
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
            using var keep = ones(3);
            Tensor incoming = ones(3), returned = ones(3).Times(2), passedThrough = ones(3);
            var first = Harness.Executor.Autograd.GradientHandOver.Return(new[] { incoming, passedThrough }, returned, passedThrough, null);
            Assert.Equal(3, first.Count);
            Assert.Null(first[2]);
            Assert.True(incoming.IsInvalid);                       // backward is done with it
            Assert.False(passedThrough.IsInvalid);                 // returned as is: libtorch still has to copy it
            Assert.Equal(6f, returned.sum().item<float>());
            Harness.Executor.Autograd.GradientHandOver.Return(keep.alias(), [null]);
            Assert.True(returned.IsInvalid && passedThrough.IsInvalid); // copied by libtorch by then
            Assert.False(keep.IsInvalid);
            }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(failure);
    }
}
