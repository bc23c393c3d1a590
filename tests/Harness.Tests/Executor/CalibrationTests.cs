using Harness.Executor.Calibration;
using Harness.Executor.Native;
using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// `harness calibrate`'s arithmetic (which constants a set of measured kernel times implies) and its measuring code on
/// the CPU at tiny shapes; the rates themselves are measured on a GPU (results/calibration/).
/// </summary>
[Collection("training")]
public class CalibrationTests
{
    private static readonly GpuSpec H200 = GpuPresets.All["h200"];

    [Fact]
    public void MeasuredConstantsReproduceTheMeasuredTimesUnderTheSimulatorsModel()
    {
        double peak = H200.PeakBf16Flops;
        var big = new GemmShape(8192, 8192, 8192);
        var small = new GemmShape(1024, 512, 256);
        double sf(GemmShape g) => ComputeTime.ShapeFactor(g, H200.Efficiency);
        // The big GEMM at 0.8 of peak after its shape factor, the small one at 0.6: the constant that gives their total
        // time is the time-weighted one, Σ flops/(peak·shape) / Σ seconds.
        double tBig = big.Flops / (0.8 * peak * sf(big)), tSmall = small.Flops / (0.6 * peak * sf(small));
        var gemms = new[] { new GemmRate("a", "forward", big, tBig), new GemmRate("b", "forward", small, tSmall) };
        // Attention: forward and backward (2.5x) at 0.3 of peak over the causal FLOPs (2·32·4096²·128 forward).
        var shape = new AttentionShape(1, 32, 32, 4096, 128);
        Assert.Equal(2.0 * 32 * 4096 * 4096 * 128, shape.CausalForwardFlops);
        double forward = shape.CausalForwardFlops / (0.3 * peak);
        var attention = new[] { new AttentionRate(shape, AttentionBackend.Flash, forward, 2.5 * forward) };
        var memory = new MemoryRate("add", 2.4e12, 1.0);
        var c = new GpuCalibration(H200, "NVIDIA H200", 7e14, 6.5e14, gemms, attention, memory);

        Assert.Equal(0.8, c.GemmEfficiency(gemms[0]), 9);
        Assert.Equal(0.6, c.GemmEfficiency(gemms[1]), 9);
        double expected = (tBig * 0.8 + tSmall * 0.6) / (tBig + tSmall);
        Assert.Equal(expected, c.Measured.Gemm, 9);
        Assert.Equal(0.3, c.AttentionEfficiency(attention[0]), 9);
        Assert.Equal(0.3, c.Measured.Attention, 9);
        Assert.Equal(0.5, c.Measured.Hbm, 9);
        // No cuDNN attention measured: the preset's fused-attention constant stays. Measured, its own rates give it: two
        // shapes at 0.5 and 0.4 of peak give the time-weighted 1/(t1+t2)·(t1·0.5 + t2·0.4) for equal FLOPs (at 8192 keys,
        // the length its constant is stated at).
        Assert.Equal(H200.Efficiency.FusedAttention, c.Measured.FusedAttention);
        var reference = new AttentionShape(1, 32, 32, 8192, 128);
        double referenceForward = reference.CausalForwardFlops / (0.3 * peak);
        var fused = new[] { new AttentionRate(reference, AttentionBackend.Fused, referenceForward * 0.3 / 0.5, 2.5 * referenceForward * 0.3 / 0.5),
                            new AttentionRate(reference, AttentionBackend.Fused, referenceForward * 0.3 / 0.4, 2.5 * referenceForward * 0.3 / 0.4) };
        var withCuDnn = c with { Attention = [.. attention, .. fused] };
        Assert.Equal(2 / (1 / 0.5 + 1 / 0.4), withCuDnn.Measured.FusedAttention!.Value, 9);
        Assert.Equal(0.3, withCuDnn.Measured.Attention, 9);
        Assert.Equal(0.5, withCuDnn.AttentionEfficiency(fused[0]), 9);
        // With the calibrated GPU the simulator's GEMM model gives back the measured total.
        var gpu = c.Calibrated;
        Assert.Equal(tBig + tSmall, ComputeTime.Gemm(big.M, big.K, big.N, gpu, Precision.Bf16) + ComputeTime.Gemm(small.M, small.K, small.N, gpu, Precision.Bf16), 12);
        // The host link is the slower direction of the pinned copies; unmeasured, the preset's.
        var linked = c with { HostToDevice = new MemoryRate("up", 50e9, 1), DeviceToHost = new MemoryRate("down", 40e9, 1) };
        Assert.Equal(40e9, linked.Calibrated.HostLinkBytesPerSecond);
        Assert.Equal(H200.HostLinkBytesPerSecond, gpu.HostLinkBytesPerSecond);
        // The cluster file `--out` writes reads back as the same GPU.
        var file = SpecJson.ParseCluster(SpecJson.Write(new ClusterSpec(gpu, 8, 8)), "calibration.json");
        Assert.Equal(gpu, file.Gpu);
    }

    [Fact]
    public void KernelRatesTimeEveryPassAndKernel()
    {
        TorchRuntime.Initialize();
        var rates = KernelRates.Gemms(CPU, [("tiny", new GemmShape(64, 32, 48))]);
        Assert.Equal(["forward", "data gradient", "weight gradient"], rates.Select(r => r.Pass));
        Assert.All(rates, r => Assert.True(r.Seconds > 0 && r.FlopsPerSecond > 0));
        // caat-1b's grouped-query attention (32 heads, 8 groups, head dim 64) on one rank of t 4, at s 32.
        var shape = AttentionShape.Of(ModelPresets.All["caat-1b"] with { SeqLength = 32 }, new RunDescription(TensorParallel: 4, MicroBatch: 2, GlobalBatch: 2));
        Assert.Equal(new AttentionShape(2, 8, 2, 32, 64), shape);
        // libtorch's CPU kernels: its flash kernel and the math one; no cuDNN.
        var attention = KernelRates.Attention(CPU, shape, AttentionBackend.Flash)!;
        Assert.True(attention.ForwardSeconds > 0 && attention.Backend == AttentionBackend.Flash);
        Assert.Equal(2.0 * 2 * 8 * 32 * 32 * 64, attention.CausalForwardFlops);
        Assert.True(KernelRates.Attention(CPU, shape, AttentionBackend.Unfused)!.ForwardSeconds > 0);
        Assert.Null(KernelRates.Attention(CPU, shape, AttentionBackend.Fused));
        Assert.Equal(SdpBackends.Allowed.All, SdpBackends.Current);
        var add = KernelRates.ElementwiseAdd(CPU, 1024);
        Assert.Equal(3 * 2 * 1024, add.Bytes);
        var (toDevice, toHost) = KernelRates.HostLink(CPU, 4096);
        Assert.True(toDevice.Bytes == 4096 && toHost.Bytes == 4096 && toDevice.Seconds > 0 && toHost.Seconds > 0);
    }
}
