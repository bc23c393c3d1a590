using System.Text.Json;
using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Offload;
using Harness.Executor.Training;
using Harness.Executor.Training.Records;
using Harness.Reproduce;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// Megatron-Kwai's activation offload (--offload-ratio alpha) on CPU ranks: the interleaved schedule the simulator requires
/// (p 4, two model chunks per rank), on a Llama whose layer tensors are whole MiBs (s·b·h·4 B = 1 MiB, FC1's output 4 MiB),
/// so that pack_hook's 1 MiB floor keeps them all and every alpha cuts somewhere. Offload moves bytes and brings the same
/// bytes back, so the losses, gradients and weights are those without it to the bit; and what each chunk offloads is what
/// the simulator's <see cref="Offload.Chunk"/> predicts for the same model and description.
/// </summary>
public class ActivationOffloadTests
{
    private static readonly ModelSpec Spec =
        new("llama-offload", 8, 256, 4, 4, 512, 64, 512, Activation.SwiGlu, Normalization.RmsNorm, PositionEmbedding.Rotary, false, HiddenDropout: 0, AttentionDropout: 0);

    /// <summary>On the CPU the executor runs SwiGLU as libtorch's operators, which keep SiLU's output: Megatron's unfused SwiGLU.</summary>
    private static readonly RunDescription Interleaved = new(PipelineParallel: 4, LayersPerVirtualStage: 1, MicroBatch: 2, GlobalBatch: 8,
        Precision: Precision.Fp32, FusedSwiGlu: false);

    private sealed record RankRun(float[] Losses, float[] Grads, float[] Weights, IReadOnlyList<OffloadRecord> Offloaded);

    /// <summary>Two steps of every rank under <see cref="Interleaved"/> at <paramref name="alpha"/>, from the weights the
    /// trainer draws (the same seed at every alpha); run once per alpha for the tests of this class.</summary>
    private static RankRun[] Run(double alpha) => Run(Spec, Interleaved with { OffloadRatio = alpha });

    private static RankRun[] Run(ModelSpec spec, RunDescription config)
    {
        lock (Runs)
        {
            if (Runs.TryGetValue((spec, config), out var done)) return done;
            var batches = Reference.Batches(spec, 2, config.GlobalBatch);
            return Runs[(spec, config)] = InProcessJob.Run(config.WorldSize, world =>
            {
                var layout = RankOrder.For(world.Size, config.TensorParallel, config.ContextParallel, config.PipelineParallel);
                using var groups = ProcessGroups.Create(world, layout);
                using var trainer = new ParallelTrainer(groups, spec, config, CPU, Reference.DropoutSeed, Reference.Adam);
                var losses = new List<float>();
                foreach (var batch in batches)
                {
                    using var scope = NewDisposeScope();
                    losses.Add(trainer.Step(Reference.Lr, ParallelRun.MicroBatches(batch, config, groups.DataRank, spec.SeqLength), losses.Count).Loss);
                }
                var named = trainer.NamedParameters().OrderBy(n => n.SerialName).ToList();
                return new RankRun([.. losses], [.. named.SelectMany(n => n.Parameter.grad!.data<float>().ToArray())],
                    [.. named.SelectMany(n => n.Parameter.data<float>().ToArray())], trainer.Offloaded);
            });
        }
    }

    private static readonly Dictionary<(ModelSpec, RunDescription), RankRun[]> Runs = [];

    /// <summary>A GPT of the same sizes: without rotary, Q, K and V are all views of the QKV projection, whose storage is
    /// emptied whole and written back view by view; GeLU keeps FC1's output and its own.</summary>
    private static readonly ModelSpec Gpt = Spec with { Name = "gpt-offload", Activation = Activation.Gelu, Normalization = Normalization.LayerNorm,
        PositionEmbedding = PositionEmbedding.Learned, TiedEmbeddings = true };

    /// <summary>Alpha 0.6 (above 0.5: Kwai's reversed order, smallest first, the boundary inside a tensor) under each
    /// recomputation, and on the GPT: the same bits as without offload.</summary>
    [Theory]
    [InlineData("gpt")]
    [InlineData("kwai")]
    [InlineData("selective")]
    [InlineData("full")]
    public void UnderEachRecomputationAndWithoutRotaryTheBitsAreThoseWithoutOffload(string variant)
    {
        var (spec, config) = variant switch
        {
            "gpt" => (Gpt, Interleaved),
            "kwai" => (Spec, Interleaved with { Recompute = RecomputeSpec.Kwai }),
            "selective" => (Spec, Interleaved with { Recompute = RecomputeSpec.Selective }),
            _ => (Spec, Interleaved with { Recompute = RecomputeSpec.FullUniform() }),
        };
        RankRun[] plain = Run(spec, config), offloaded = Run(spec, config with { OffloadRatio = 0.6 });
        for (int r = 0; r < plain.Length; r++)
        {
            Assert.NotEmpty(offloaded[r].Offloaded);
            Assert.All(offloaded[r].Offloaded, o => Assert.True(o.OffloadedBytes > 0));
            Assert.Equal(plain[r].Losses, offloaded[r].Losses);
            Assert.True(plain[r].Grads.AsSpan().SequenceEqual(offloaded[r].Grads), $"{variant}: rank {r}'s gradients are not the same bits");
            Assert.True(plain[r].Weights.AsSpan().SequenceEqual(offloaded[r].Weights), $"{variant}: rank {r}'s weights are not the same bits");
        }
    }

    [Theory]
    [InlineData(0.25)]
    [InlineData(0.5)]
    [InlineData(0.75)]
    [InlineData(1.0)]
    public void LossesGradientsAndWeightsAreThoseWithoutOffloadToTheBit(double alpha)
    {
        RankRun[] plain = Run(0), offloaded = Run(alpha);
        for (int r = 0; r < plain.Length; r++)
        {
            Assert.Empty(plain[r].Offloaded);
            Assert.NotEmpty(offloaded[r].Offloaded);
            Assert.Equal(plain[r].Losses, offloaded[r].Losses);
            Assert.True(plain[r].Grads.AsSpan().SequenceEqual(offloaded[r].Grads), $"alpha {alpha}: rank {r}'s gradients are not the same bits");
            Assert.True(plain[r].Weights.AsSpan().SequenceEqual(offloaded[r].Weights), $"alpha {alpha}: rank {r}'s weights are not the same bits");
        }
    }

    /// <summary>
    /// Every chunk but the model's last (rank 3's second) offloads, for each micro-batch, what <see cref="Offload.Chunk"/> says,
    /// from the bytes the simulator counts (<see cref="Activations.LayerTensors"/> kept, 1 MiB or more: per layer the two norm
    /// inputs and outputs, Q, K, V and the context, 1 MiB each, FC1's halves, SiLU's output and the product, 2 MiB each: 16 MiB),
    /// and leaves the rest resident (the last step's records). Alpha 0 runs no offload.
    /// </summary>
    [Fact]
    public void EachChunkOffloadsWhatTheSimulatorPredicts()
    {
        const double MiB = 1 << 20;
        foreach (double alpha in (double[])[0, 0.25, 0.5, 0.75, 1])
        {
            var c = Interleaved with { OffloadRatio = alpha };
            var all = new LayerTensor[Activations.MaxLayerTensors];
            var tensors = all.AsSpan(0, Activations.LayerTensors(Spec, c, all));
            double saved = 0;
            foreach (var t in tensors) saved += t.Kept && t.Bytes >= Offload.MinTensorBytes ? t.Bytes : 0;
            Assert.Equal(16 * MiB, saved);
            var predicted = Offload.Chunk(tensors, c, 1, Activations.Layer(Spec, c, tensors).Saved);
            Assert.Equal(0, predicted.Stranded); // no max_split_size: PyTorch's default allocator splits blocks to size
            var runs = Run(alpha);
            for (int r = 0; r < runs.Length; r++)
            {
                var records = runs[r].Offloaded;
                if (alpha == 0) { Assert.Empty(records); continue; }
                int chunks = r == c.PipelineParallel - 1 ? 1 : 2;
                Assert.Equal(chunks * 4, records.Count);
                Assert.All(records, o =>
                {
                    Assert.Equal(saved, o.SavedBytes);
                    Assert.Equal(predicted.Offloaded, o.OffloadedBytes);
                    Assert.Equal(saved - predicted.Offloaded, o.ResidentBytes);
                });
            }
            Assert.Equal(alpha == 0 ? 0 : Math.Ceiling(alpha * 16) * MiB, predicted.Offloaded);
        }
    }

    /// <summary>
    /// A run's records hold the bookkeeping: the ranks of a `harness run` (<see cref="TrainingRun"/>, as the command launches
    /// CPU ranks) at alpha 0.5 write offload.csv, each rank's rows the records its trainer keeps (those of <see cref="Run(double)"/>'s
    /// last step: the bytes do not depend on the weights), and summary.json's OffloadPerRank their sums, which
    /// `harness validate --offload` (<see cref="OffloadValidation"/>) finds equal to the simulator's count to the byte.
    /// </summary>
    [Fact]
    public void ARunRecordsItsOffloadBookkeepingWhichIsTheSimulatorsToTheByte()
    {
        var config = Interleaved with { OffloadRatio = 0.5 };
        string dir = Path.Combine(TestTemp.Root, $"harness-offload-{Guid.NewGuid():N}");
        try
        {
            var job = new TrainingRun(Spec, config, new RunSettings(TrainIters: 1, MockData: true, Out: dir, NprocPerNode: config.WorldSize), dir, _ => { });
            InProcessJob.Run(config.WorldSize, world => job.RunRank(world, CPU, 0));
            var rows = File.ReadAllLines(Path.Combine(dir, OffloadCsv.FileName));
            Assert.Equal("rank,micro_batch,chunk,saved_bytes,offloaded_bytes,resident_bytes", rows[0]);
            var bookkeeping = Run(0.5);
            Assert.Equal(bookkeeping.SelectMany((r, rank) => r.Offloaded.Select(o =>
                    FormattableString.Invariant($"{rank},{o.MicroBatch},{o.Chunk},{o.SavedBytes},{o.OffloadedBytes},{o.ResidentBytes}"))), rows.Skip(1));
            using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
            var totals = summary.RootElement.GetProperty("OffloadPerRank").EnumerateArray()
                .Select(t => new OffloadTotals(t.GetProperty("Records").GetInt32(), t.GetProperty("SavedBytes").GetInt64(),
                    t.GetProperty("OffloadedBytes").GetInt64(), t.GetProperty("ResidentBytes").GetInt64()));
            Assert.Equal(bookkeeping.Select(r => OffloadTotals.Of(r.Offloaded)), totals);
            var ranks = OffloadValidation.Of(dir);
            Assert.Equal(config.WorldSize, ranks.Count);
            Assert.All(ranks, r => Assert.True(r.Equal, $"rank {r.Rank}: run {r.Measured}, simulator {r.Simulated}"));
            Assert.Equal(2 * 4 * 8 * Offload.MiB, ranks[0].Simulated.Resident); // two chunks, four micro-batches, 8 of each chunk's 16 MiB
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// With hidden dropout, the model's first chunk also saves the embedding's dropout mask (a byte per element: 1 MiB at
    /// micro-batch 8), which record() takes into the same cut as the chunk's layers. At alpha 0.75 Kwai's order is reversed,
    /// smallest first, so the mask is offloaded whole ahead of the layers' tensors. `harness validate --offload` finds every
    /// rank's bookkeeping the simulator's to the byte, and rank 0 records four masks more than rank 1, whose chunks are alike.
    /// </summary>
    [Fact]
    public void TheEmbeddingsDropoutMaskIsCutWithTheFirstChunkAsTheSimulatorCountsIt()
    {
        var spec = Spec with { Name = "llama-offload-dropout", HiddenDropout = 0.1 };
        var config = Interleaved with { MicroBatch = 8, GlobalBatch = 32, OffloadRatio = 0.75 };
        string dir = Path.Combine(TestTemp.Root, $"harness-offload-dropout-{Guid.NewGuid():N}");
        try
        {
            var job = new TrainingRun(spec, config, new RunSettings(TrainIters: 1, MockData: true, Out: dir, NprocPerNode: config.WorldSize), dir, _ => { });
            InProcessJob.Run(config.WorldSize, world => job.RunRank(world, CPU, 0));
            var ranks = OffloadValidation.Of(dir);
            Assert.All(ranks, r => Assert.True(r.Equal, $"rank {r.Rank}: run {r.Measured}, simulator {r.Simulated}"));
            double mask = (double)config.MicroBatch * spec.SeqLength * spec.HiddenSize;
            Assert.Equal(Offload.MiB, mask);
            Assert.Equal(4 * mask, ranks[0].Measured.Recorded - ranks[1].Measured.Recorded);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Megatron-core's --cpu-offloading-num-layers N on one rank (it refuses pipeline parallelism): the same bits as without,
    /// and each micro-batch offloads, of each of the first N layers, every tensor the layer recorded: the 16 MiB the simulator
    /// counts (<see cref="Activations.LayerTensors"/>) less attention's 16 KiB log-sum-exp, which stays inside libtorch.
    /// Of 4 layers, N 2 gives Transformer Engine's windows at layers 1 and 3, N 3 at 1, 2 and 3.
    /// </summary>
    [Theory]
    [InlineData(2, new[] { 1, 3 })]
    [InlineData(3, new[] { 1, 2, 3 })]
    public void CpuOffloadingOfTheFirstLayersKeepsTheBitsAndOffloadsTheirActivations(int layers, int[] windows)
    {
        const double MiB = 1 << 20;
        var spec = Spec with { NumLayers = 4 };
        Assert.Equal(windows, Enumerable.Range(0, layers).Select(g => CpuOffloading.Window(spec.NumLayers, layers, g)));
        var single = new RunDescription(MicroBatch: 2, GlobalBatch: 4, Precision: Precision.Fp32, FusedSwiGlu: false);
        var c = single with { CpuOffloadingLayers = layers };
        var tensors = new LayerTensor[Activations.MaxLayerTensors];
        int n = Activations.LayerTensors(Spec, c, tensors);
        double lse = 2.0 * Spec.SeqLength * Spec.NumAttentionHeads * 4;
        Assert.Equal(16 * MiB + lse, Activations.Layer(Spec, c, tensors.AsSpan(0, n)).Saved);
        var plain = Assert.Single(Run(spec, single));
        var offloaded = Assert.Single(Run(spec, c));
        Assert.Equal(plain.Losses, offloaded.Losses);
        Assert.True(plain.Grads.AsSpan().SequenceEqual(offloaded.Grads), "gradients are not the same bits");
        Assert.True(plain.Weights.AsSpan().SequenceEqual(offloaded.Weights), "weights are not the same bits");
        Assert.Equal(2 * layers, offloaded.Offloaded.Count);
        Assert.All(offloaded.Offloaded, o =>
        {
            Assert.Equal(16 * MiB, o.SavedBytes);
            Assert.Equal(16 * MiB, o.OffloadedBytes);
        });
    }
}
