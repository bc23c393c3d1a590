using System.Diagnostics;
using Harness.Executor.Native;
using Harness.Executor.Transformer;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Calibration;

/// <summary>One GEMM timed on the GPU: which layer and pass it stands for, its shape and seconds per call.</summary>
public sealed record GemmRate(string Layer, string Pass, GemmShape Shape, double Seconds)
{
    public double FlopsPerSecond => Shape.Flops / Seconds;
}

/// <summary>One rank's causal attention for one micro-batch: query heads, key/value groups, sequence, head dimension.</summary>
public readonly record struct AttentionShape(long Batch, long Heads, long Groups, long SeqLength, long HeadDim)
{
    /// <summary>The unmasked half of the score and context matmuls, 2·b·heads·s²·head_dim: what the simulator charges a
    /// causal forward (<see cref="ComputeTime"/>).</summary>
    public double CausalForwardFlops => 2.0 * Batch * Heads * SeqLength * SeqLength * HeadDim;

    /// <summary>The attention of one layer of <paramref name="m"/> on one rank of <paramref name="c"/> (heads and groups
    /// split over tensor parallelism).</summary>
    public static AttentionShape Of(ModelSpec m, RunDescription c) => new(c.MicroBatch, m.NumAttentionHeads / c.TensorParallel,
        Math.Max(1, m.NumQueryGroups / c.TensorParallel), m.SeqLength, m.HeadDim);
}

/// <summary>Causal attention through one backend's kernel (the executor's scaled_dot_product_attention) timed forward and backward.</summary>
public sealed record AttentionRate(AttentionShape Shape, AttentionBackend Backend, double ForwardSeconds, double BackwardSeconds)
{
    public double CausalForwardFlops => Shape.CausalForwardFlops;
}

/// <summary>A memory-bound element-wise kernel: bytes read plus written, seconds per call.</summary>
public sealed record MemoryRate(string Kernel, double Bytes, double Seconds)
{
    public double BytesPerSecond => Bytes / Seconds;
}

/// <summary>
/// Times the kernels whose rates the simulator's <see cref="Harness.Simulator.Specs.EfficiencySpec"/> stands for, on
/// one CUDA device, in bf16: GEMMs of given shapes in the three passes a linear layer runs (forward y = x·Wᵀ, data
/// gradient dy·W, weight gradient dyᵀ·x, as nn.Linear lays them out), causal attention forward and backward per backend,
/// and a streaming element-wise add. Each rate is the mean over a batch of calls long enough (≥ 0.3 s) that launch
/// gaps and timer resolution vanish, after warm-up calls, between two device synchronizations.
/// </summary>
public static class KernelRates
{
    private const double MinBatchSeconds = 0.3;

    /// <summary>
    /// Runs a large GEMM back to back for <paramref name="seconds"/>, so that what follows is measured on a GPU at its
    /// sustained clocks under power load, as in training, not at the boost clocks of a cold one. Returns the 8192³
    /// GEMM's FLOP/s at the start and at the end of the hold.
    /// </summary>
    public static (double Cold, double Held) HoldAtLoad(Device device, double seconds)
    {
        var shape = new GemmShape(8192, 8192, 8192);
        using var scope = NewDisposeScope();
        var (x, w, _) = Operands(device, shape);
        void Forward() => nn.functional.linear(x, w).Dispose();
        double cold = SecondsPerCall(device, Forward);
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            for (int i = 0; i < 20; i++) Forward();
            Synchronize(device);
        }
        return (shape.Flops / cold, shape.Flops / SecondsPerCall(device, Forward));
    }

    /// <summary>The GEMMs a linear layer of this (tokens x K)·(K x N) forward shape runs, each timed on the same operands:
    /// forward y = x·Wᵀ, data gradient dy·W, weight gradient dyᵀ·x.</summary>
    public static IEnumerable<(string Pass, double Seconds)> Gemm(Device device, GemmShape shape)
    {
        using var scope = NewDisposeScope();
        var (x, w, dy) = Operands(device, shape);
        return new (string, Action)[]
        {
            ("forward", () => nn.functional.linear(x, w).Dispose()),
            ("data gradient", () => MatrixProduct.Of(dy, w).Dispose()),
            ("weight gradient", () => MatrixProduct.Of(dy.t(), x).Dispose()),
        }.Select(p => (p.Item1, SecondsPerCall(device, p.Item2))).ToList();
    }

    /// <summary>Every layer's GEMMs in all three passes.</summary>
    public static IReadOnlyList<GemmRate> Gemms(Device device, IEnumerable<(string Layer, GemmShape Shape)> shapes) =>
        shapes.SelectMany(s => Gemm(device, s.Shape).Select(p => new GemmRate(s.Layer, p.Pass, s.Shape, p.Seconds))).ToList();

    /// <summary>Causal attention of a [batch, heads, s, head_dim] query over key and value tensors of
    /// <paramref name="a"/>'s groups (grouped-query attention when fewer), forward then backward, as the executor runs it,
    /// through <paramref name="backend"/>'s kernel alone (<see cref="AttentionKernel.Only"/>: FlashAttention-2, cuDNN's fused
    /// attention, libtorch's math kernel for unfused); null where this device has no such kernel for these inputs. libtorch's
    /// kernel switches are left allowing every kernel, its default.</summary>
    public static AttentionRate? Attention(Device device, AttentionShape a, AttentionBackend backend)
    {
        using var scope = NewDisposeScope();
        long[] dims = { a.Batch, a.Heads, a.SeqLength, a.HeadDim }, kvDims = { a.Batch, a.Groups, a.SeqLength, a.HeadDim };
        var q = randn(dims, dtype: ScalarType.BFloat16, device: device).requires_grad_();
        var k = randn(kvDims, dtype: ScalarType.BFloat16, device: device).requires_grad_();
        var v = randn(kvDims, dtype: ScalarType.BFloat16, device: device).requires_grad_();
        var dy = randn(dims, dtype: ScalarType.BFloat16, device: device);
        SdpBackends.Set(AttentionKernel.Only(backend));
        try
        {
            try
            {
                if (AttentionKernel.Of(ScriptedKernels.AttentionKernel(q, k, v, 0)) != (AttentionKernels.KeepsScores(backend) ? AttentionBackend.Unfused : backend))
                    return null;
            }
            catch (System.Runtime.InteropServices.ExternalException e) when (!AllocationFailure.Is(e)) { return null; } // no allowed kernel takes these inputs
            return Time(device, a, backend, q, k, v, dy);
        }
        finally { SdpBackends.Set(SdpBackends.Allowed.All); }
    }

    private static AttentionRate Time(Device device, AttentionShape a, AttentionBackend backend, Tensor q, Tensor k, Tensor v, Tensor dy)
    {
        double forward = SecondsPerCall(device, () => ScriptedKernels.CausalAttention(q, k, v).Dispose());
        double both = SecondsPerCall(device, () =>
        {
            using var y = ScriptedKernels.CausalAttention(q, k, v);
            y.backward(new[] { dy });
            foreach (var t in new[] { q, k, v }) t.grad?.Dispose();
            foreach (var t in new[] { q, k, v }) t.grad = null;
        });
        return new AttentionRate(a, backend, forward, both - forward);
    }

    /// <summary>c = a + b over <paramref name="elements"/> bf16 elements: reads two, writes one.</summary>
    public static MemoryRate ElementwiseAdd(Device device, long elements)
    {
        using var scope = NewDisposeScope();
        var a = randn(elements, dtype: ScalarType.BFloat16, device: device);
        var b = randn(elements, dtype: ScalarType.BFloat16, device: device);
        return new MemoryRate($"bf16 add, {elements:N0} elements", 3.0 * 2 * elements, SecondsPerCall(device, () => a.Plus(b).Dispose()));
    }

    /// <summary>Copies of <paramref name="bytes"/> between pinned host memory and the device, each way: the host link
    /// activation offload streams over.</summary>
    public static (MemoryRate ToDevice, MemoryRate ToHost) HostLink(Device device, long bytes)
    {
        using var scope = NewDisposeScope();
        var onHost = empty(bytes, dtype: ScalarType.Byte);
        if (device.type == DeviceType.CUDA) onHost = onHost.pin_memory();
        var onDevice = empty(bytes, dtype: ScalarType.Byte, device: device);
        var back = device.type == DeviceType.CUDA ? empty(bytes, dtype: ScalarType.Byte).pin_memory() : empty(bytes, dtype: ScalarType.Byte);
        double toDevice = SecondsPerCall(device, () => onDevice.copy_(onHost, true));
        double toHost = SecondsPerCall(device, () => back.copy_(onDevice, true));
        return (new MemoryRate("host -> device, pinned", bytes, toDevice), new MemoryRate("device -> host, pinned", bytes, toHost));
    }

    private static (Tensor X, Tensor W, Tensor Dy) Operands(Device device, GemmShape s)
    {
        long m = (long)s.M, k = (long)s.K, n = (long)s.N;
        return (randn(new[] { m, k }, dtype: ScalarType.BFloat16, device: device),
                randn(new[] { n, k }, dtype: ScalarType.BFloat16, device: device),
                randn(new[] { m, n }, dtype: ScalarType.BFloat16, device: device));
    }

    /// <summary>Mean seconds per call over a batch of at least <see cref="MinBatchSeconds"/>, after three warm-up calls.</summary>
    private static double SecondsPerCall(Device device, Action call)
    {
        for (int i = 0; i < 3; i++) call();
        Synchronize(device);
        long start = Stopwatch.GetTimestamp();
        call();
        Synchronize(device);
        double one = Math.Max(Stopwatch.GetElapsedTime(start).TotalSeconds, 1e-6);
        int calls = (int)Math.Clamp(Math.Ceiling(MinBatchSeconds / one), 3, 10_000);
        start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++) call();
        Synchronize(device);
        return Stopwatch.GetElapsedTime(start).TotalSeconds / calls;
    }

    /// <summary>Waits for the device's queued work (CPU work is synchronous).</summary>
    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
    }
}
