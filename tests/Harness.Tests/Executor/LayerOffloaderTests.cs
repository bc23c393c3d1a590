using Harness.Executor.Autograd;
using Harness.Executor.Native;
using Harness.Executor.Offload;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// Megatron-core's --cpu-offloading over one micro-batch, as the copy stream sees it: backward waits only at a window's
/// layer and at layer 0, and the reload Transformer Engine starts at a window's layer is issued after the wait
/// (cpu_offload_v1.py, on_group_commit_backward), so each group's copy runs beside the layers' backward until the next wait.
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
            if (InBackward) Backward.Add('c');
            HostMemoryLink.Instance.ToDeviceInto(source, target);
        }

        public void Fence()
        {
            if (InBackward) Backward.Add('f');
        }

        public void Dispose() { }
    }

    /// <summary>Of 4 layers, 3 offloaded: windows at layers 1, 2 and 3. Of 8, 4 offloaded: windows at 1, 3, 5 and 7, so
    /// backward reloads group 3 at layer 7 and waits for it at 5, where group 2's reload starts, and so on: one wait per
    /// group, none between windows.</summary>
    [Theory]
    [InlineData(4, 3)]
    [InlineData(8, 4)]
    public void BackwardWaitsOnceAGroupAtTheWindowsOnly(int layers, int offloaded)
    {
        TorchRuntime.Initialize();
        var spec = new ModelSpec("offload-order", layers, 64, 4, 4, 128, 64, 64, Activation.SwiGlu, Normalization.RmsNorm,
            PositionEmbedding.Rotary, false, HiddenDropout: 0, AttentionDropout: 0);
        using var scope = NewDisposeScope();
        using var model = new GptModel(new TransformerConfig(spec, CPU, ScalarType.Float32, SerialTensorParallel.Instance, null, InitSeed: 1));
        var link = new NotingLink();
        using var offloader = new LayerOffloader(layers, offloaded, link);
        var tokens = randint(0, 64, [2, 64], dtype: ScalarType.Int64);
        var loss = model.Loss(model.Decode(model.Embed(tokens), offloader.AtLayerInput), tokens);
        link.InBackward = true;
        BackwardFailure.Run(() => loss.backward());
        var groups = new string(link.Backward.ToArray()).Split('f');
        int perLayer = groups[0].Length;
        Assert.True(perLayer > 0, "no reload before the first wait");
        // A group's copies, wait, the next group's, wait, ...: never two groups' copies before one wait, nor a wait without one.
        Assert.Equal(Enumerable.Repeat(new string('c', perLayer), offloaded).Append(""), groups);
    }
}
