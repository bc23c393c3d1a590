using Harness.Executor.Native;
using Harness.Executor.Offload;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// Megatron-core's --cpu-offloading over one micro-batch, as the copy stream sees it: in backward each layer waits for its
/// own group only, and the reload Transformer Engine starts at that layer is issued after the wait
/// (cpu_offload_v1.py, on_group_commit_backward), so the next group's copy runs beside the layer's backward.
/// </summary>
public class LayerOffloaderTests
{
    /// <summary>The CPU's copies, with every call noted: "c" per copy to the device, "f" per fence, from backward's start.</summary>
    private sealed class NotingLink : IHostLink
    {
        public bool InBackward { get; set; }
        public List<char> Backward { get; } = [];

        public void AfterCompute() { }
        public Tensor ToHost(Tensor source) => HostMemoryLink.Instance.ToHost(source);

        public void ToDeviceInto(Tensor source, Tensor target)
        {
            Backward.Add('c');
            HostMemoryLink.Instance.ToDeviceInto(source, target);
        }

        public void Fence()
        {
            if (InBackward) Backward.Add('f');
        }

        public void Dispose() { }
    }

    [Fact]
    public void EachLayersBackwardWaitsForItsOwnGroupAlone()
    {
        TorchRuntime.Initialize();
        var spec = new ModelSpec("offload-order", 4, 64, 4, 4, 128, 64, 64, Activation.SwiGlu, Normalization.RmsNorm,
            PositionEmbedding.Rotary, false, HiddenDropout: 0, AttentionDropout: 0);
        using var scope = NewDisposeScope();
        using var model = new GptModel(new TransformerConfig(spec, CPU, ScalarType.Float32, SerialTensorParallel.Instance, null, InitSeed: 1));
        var link = new NotingLink();
        // 3 of 4 layers: Transformer Engine's windows at layers 1, 2 and 3; backward reloads group 2 at layer 3, 1 at 2, 0 at 1.
        using var offloader = new LayerOffloader(4, 3, link);
        var tokens = randint(0, 64, [2, 64], dtype: ScalarType.Int64);
        var loss = model.Loss(model.Decode(model.Embed(tokens), offloader.AtLayerInput), tokens);
        link.InBackward = true;
        loss.backward();
        var groups = new string(link.Backward.ToArray()).Split('f');
        int perLayer = groups[0].Length;
        Assert.True(perLayer > 0, "no reload before the first wait");
        // A group's copies, wait, the next group's, wait, ...: never two groups' copies before one wait.
        Assert.Equal([new string('c', perLayer), new string('c', perLayer), new string('c', perLayer), ""], groups);
    }
}
