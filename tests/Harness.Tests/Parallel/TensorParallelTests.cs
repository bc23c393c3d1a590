using Harness.Executor.Distributed;
using Harness.Executor.Distributed.InProcess;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

public class TensorParallelTests
{
    private const int Steps = 3;

    /// <summary>Trains one tensor-parallel rank like <see cref="Reference.Serial"/>; returns its losses and last gradients.</summary>
    private static Reference.Run Rank(ModelSpec spec, Tensor[] batches, ShardedTensorParallel tp, Dictionary<string, float[]> initial)
    {
        using var model = Reference.Build(spec, tp, initial, tp.Group.Rank);
        using var buffer = new ParamAndGradBuffer(model, ScalarType.Float32);
        using var adam = new AdamW(buffer, Reference.Adam);
        var losses = new List<float>();
        Dictionary<string, float[]> grads = new();
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            buffer.ZeroGrads();
            var loss = model.forward(batch[.., ..(int)spec.SeqLength], batch[.., 1..]);
            loss.backward();
            FinalizeModelGrads.AllReduceReplicatedGrads(tp, model);
            losses.Add(loss.item<float>());
            grads = model.named_parameters().ToDictionary(n => n.name, n => n.parameter.grad!.data<float>().ToArray());
            adam.ClipAndStep(Reference.Lr);
        }
        return new Reference.Run([.. losses], grads, initial);
    }

    private static void AssertMatchesSerial(ModelSpec spec, int size, bool sequenceParallel = false, double? syncFactor = null)
    {
        var batches = Reference.Batches(spec, Steps, batch: 2);
        var serial = Reference.Serial(spec, batches);
        var ranks = InProcessJob.Run(size, c => Rank(spec, batches, new ShardedTensorParallel(c, sequenceParallel, syncFactor), serial.Initial));
        for (int r = 0; r < size; r++)
        {
            Reference.AssertClose(ranks[r].Losses, serial.Losses, $"rank {r} losses");
            foreach (var (name, grad) in serial.LastGrads)
                Reference.AssertClose(ranks[r].LastGrads[name], Reference.ShardOf(name, grad, spec, r, size), $"rank {r} gradient of {name}");
        }
        Assert.True(serial.Losses[^1] < serial.Losses[0], "the reference run does not train");
    }

    [Fact]
    public void Tp2LlamaMatchesSerial() => AssertMatchesSerial(Reference.Llama(), 2);

    [Fact]
    public void Tp4GptMatchesSerial() => AssertMatchesSerial(Reference.Gpt(), 4);

    [Fact]
    public void Tp4LlamaMatchesSerial() => AssertMatchesSerial(Reference.Llama(), 4);

    [Fact]
    public void SequenceParallelTp2MatchesSerial()
    {
        AssertMatchesSerial(Reference.Llama(), 2, sequenceParallel: true);
        AssertMatchesSerial(Reference.Gpt(), 2, sequenceParallel: true);
    }

    [Fact]
    public void SyncFactorOneEqualsFullSynchronization()
    {
        AssertMatchesSerial(Reference.Llama(), 2, syncFactor: 1.0);
        AssertMatchesSerial(Reference.Gpt(), 4, syncFactor: 1.0);
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(0.0)]
    public void PartialSyncIsDeterministicAndTrains(double p)
    {
        var spec = Reference.Llama();
        var batches = Reference.Batches(spec, 4, batch: 2);
        var serial = Reference.Serial(spec, batches);
        Reference.Run[] Train() => InProcessJob.Run(2, c => Rank(spec, batches, new ShardedTensorParallel(c, syncFactor: p), serial.Initial));
        var first = Train();
        var second = Train();
        Assert.Equal(first[0].Losses, second[0].Losses);          // bit for bit
        Assert.Equal(first[0].Losses, first[1].Losses);           // the loss is all-reduced: every rank agrees
        Assert.True(first[0].Losses[^1] < first[0].Losses[0] - 0.1, $"p = {p} does not train: {string.Join(", ", first[0].Losses)}");
        // Unsynchronized channels change the function: not the serial model's loss after the first step.
        Assert.True(Reference.RelativeError(first[0].Losses, serial.Losses) > 1e-4, "p < 1 gave the fully synchronized losses");
    }
}
