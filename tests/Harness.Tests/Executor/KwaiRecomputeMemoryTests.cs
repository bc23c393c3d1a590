using System.Runtime.InteropServices;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Native;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// The bytes a layer keeps for backward, measured: libtorch's CPU tensors live on the C heap (c10's alloc_cpu, posix_memalign),
/// so the heap's bytes in use after one layer's forward, less its output and less what was in use before, are what autograd
/// holds for that layer: saved tensors, and graph nodes of a few hundred bytes each. Process-wide, hence alone.
/// </summary>
[Collection("Alone")]
public class KwaiRecomputeMemoryTests(ITestOutputHelper output)
{
    /// <summary>A Llama layer whose activations are whole MiBs: s·b·h·4 B = 1 MiB, ffn 2h.</summary>
    private static readonly ModelSpec Spec =
        new("llama-mem", 1, 256, 4, 4, 512, 64, 512, Activation.SwiGlu, Normalization.RmsNorm, PositionEmbedding.Rotary, false, HiddenDropout: 0, AttentionDropout: 0);
    /// <summary>On the CPU the executor runs SwiGLU as libtorch's chunk, silu and product: Megatron's unfused SwiGLU.</summary>
    private static readonly RunDescription Description = new(MicroBatch: 2, GlobalBatch: 2, Precision: Precision.Fp32, FusedSwiGlu: false);

    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, OrdBlks, SmBlks, HBlks, HBlkHd, UsmBlks, FsmBlks, UordBlks, FordBlks, KeepCost;
    }

    /// <summary>glibc's heap statistics over every arena (glibc 2.33+).</summary>
    [DllImport("libc", EntryPoint = "mallinfo2")]
    private static extern MallInfo2 MallocInfo();

    /// <summary>Bytes allocated and not freed: chunks in use in the arenas plus mmapped chunks.</summary>
    private static long HeapInUse()
    {
        var m = MallocInfo();
        return (long)(m.UordBlks + m.HBlkHd);
    }

    /// <summary>
    /// The bytes one layer keeps for backward on each tensor-parallel rank under each of <paramref name="ds"/> (all of one t;
    /// sequence parallel when t > 1: every rank's forward runs in the measured window, so the window holds t ranks' bytes):
    /// the median over nine rounds, each of which measures one forward of every description in turn, so that whatever else
    /// lands in the process's heap meanwhile (a scripted kernel the graph executor specializes again, the runtime's own
    /// native allocations on another thread) is spread over the descriptions' windows and outvoted in each.
    /// </summary>
    private static long[] KeptBytes(IReadOnlyList<RunDescription> ds)
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        int t = ds[0].TensorParallel;
        var perRank = InProcessJob.Run(t, comm =>
        {
            ITensorParallel tp = t == 1 ? SerialTensorParallel.Instance : new ShardedTensorParallel(comm, sequenceParallel: true);
            using var rotary = new RotaryEmbedding(Spec.HeadDim, Spec.SeqLength, ScalarType.Float32, CPU);
            var layers = ds.Select(d => new TransformerLayer(new TransformerConfig(Spec, CPU, ScalarType.Float32, tp, d.Recompute, InitSeed: 1), rotary, 0)).ToList();
            using var data = new Generator(2);
            using var x = randn([ds[0].MicroBatch, Spec.SeqLength / t, Spec.HiddenSize], generator: data).requires_grad_();
            // Three steps of each first: the scripted kernels compile and the allocator settles.
            foreach (var layer in layers)
                for (int warm = 0; warm < 3; warm++)
                {
                    using var scope = NewDisposeScope();
                    layer.forward(x).sum().backward();
                }
            var kept = layers.Select(_ => new List<long>()).ToList();
            for (int round = 0; round < 9; round++)
                for (int k = 0; k < layers.Count; k++)
                {
                    long before = 0;
                    if (comm.Rank == 0)
                    {
                        GC.Collect();
                        GC.WaitForPendingFinalizers();
                        GC.Collect();
                    }
                    comm.Barrier();
                    if (comm.Rank == 0) before = HeapInUse();
                    comm.Barrier();
                    using var scope = NewDisposeScope();
                    var y = layers[k].forward(x);
                    comm.Barrier();
                    if (comm.Rank == 0) kept[k].Add((HeapInUse() - before) / t - y.NumberOfElements * y.ElementSize);
                    comm.Barrier();
                }
            foreach (var layer in layers) layer.Dispose();
            return comm.Rank == 0 ? kept.Select(k => k.Order().ElementAt(k.Count / 2)).ToArray() : [];
        });
        return perRank[0];
    }

    /// <summary>What the simulator says one layer of <see cref="Spec"/> keeps under <paramref name="d"/> on one rank.</summary>
    private static double SimulatedBytes(RunDescription d) => Activations.PerLayerKept(Activations.Layer(Spec, d), d.RecomputeOrNone, 1);
    /// <summary>
    /// Per layer, the measured drop against the simulator's (<see cref="Activations.Layer"/>: the two norm outputs and the SiLU
    /// output and product), within 64 KiB: the per-token norm statistics and the graph nodes the simulator leaves out (as
    /// Korthikanti et al. do) are a few KiB of it. The SwiGLU recompute drops what the simulator counts. The norm recompute
    /// drops, per norm, t + 1 times the one local norm output the simulator counts: also (a) the normalized input
    /// x·rsqrt(mean(x²) + eps), which libtorch's RMSNorm on the CPU (composite: that product times the weight) keeps for the
    /// weight's gradient, where a fused norm keeps only its input and statistics, and (b) under sequence parallelism the other
    /// ranks' blocks of the all-gathered norm output, which the column-parallel linear keeps without the recompute
    /// (<see cref="ParallelLinear"/>; Megatron keeps the local block and gathers again in backward, as the recompute does).
    /// Measured (libtorch 2.10 CPU): t 1 drops 4.01 MiB (norms), 4.00 MiB (SwiGLU), 8.02 MiB (both) against 2, 4 and 6 MiB
    /// simulated; t 2 (sequence parallel, per rank) 3.01, 2.00 and 5.01 MiB against 1, 2 and 3 MiB.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void TheDropIsTheNormAndSwiGluOutputsTheSimulatorCounts(int t)
    {
        var d = Description with { TensorParallel = t, SequenceParallel = t > 1 };
        RunDescription With(RecomputeSpec r) => d with { Recompute = r };
        double Simulated(RecomputeSpec r) => SimulatedBytes(d) - SimulatedBytes(With(r));
        RecomputeSpec norm = new(NormOutputs: true), activation = new(MlpActivation: true);
        RecomputeSpec[] modes = [RecomputeSpec.None, activation, norm, RecomputeSpec.Kwai];
        var kept = KeptBytes(modes.Select(With).ToList());
        long Drop(RecomputeSpec r)
        {
            long drop = kept[0] - kept[Array.IndexOf(modes, r)];
            output.WriteLine($"t {t}, norm {r.NormOutputs}, activation {r.MlpActivation}: kept {kept[0]} -> {kept[0] - drop} B, drop {drop} B, simulated {Simulated(r)} B");
            return drop;
        }
        double normOutputs = Simulated(norm), swiglu = Simulated(activation);
        Assert.Equal(2.0 * Spec.SeqLength * Description.MicroBatch / t * Spec.HiddenSize * 4, normOutputs);    // two local norm outputs
        Assert.Equal(2.0 * Spec.SeqLength * Description.MicroBatch / t * Spec.FfnHiddenSize * 4, swiglu);      // SiLU output and product
        const double tolerance = 64 << 10;
        Assert.Equal(swiglu, Drop(activation), tolerance);
        Assert.Equal((t + 1) * normOutputs, Drop(norm), tolerance);
        Assert.Equal((t + 1) * normOutputs + swiglu, Drop(RecomputeSpec.Kwai), tolerance);
    }
}
