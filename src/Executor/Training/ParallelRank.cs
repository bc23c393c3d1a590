using System.Diagnostics;
using Harness.Executor.Data;
using Harness.Executor.Distributed;
using Harness.Executor.Fused;
using Harness.Executor.Offload;
using Harness.Executor.Native;
using Harness.Executor.Training.Records;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>
/// One rank of a parallel run behind the loop: its <see cref="ParallelTrainer"/>, the data (every rank reads the same
/// global batch with the same sampler and takes its data-parallel share, as Megatron's samplers do), checkpoints
/// (<see cref="DistributedCheckpoint"/>), and what the loop needs agreed over the ranks: the peak memory, and whether to
/// stop, in one all-reduce per iteration (a rank that stopped alone would leave the others waiting in a collective).
/// </summary>
public sealed class ParallelRank : ITrainStep
{
    private readonly ICommunicator world;
    private readonly RunDescription description;
    private readonly RunSettings settings;
    private readonly int tokenizerVocab, localDevice;
    private readonly Device device;
    private readonly ProcessGroups groups;
    private readonly ParallelTrainer trainer;
    private readonly SplitData data;
    private readonly GptSampler sampler;
    private readonly GptSampler? validation;
    private readonly long[] host;
    private long peakMemory;

    /// <param name="model">The model with the tokenizer's vocabulary; the tables are padded for the tensor-parallel size.</param>
    public ParallelRank(ICommunicator world, Device device, int localDevice, ModelSpec model, RunDescription description, RunSettings settings)
    {
        (this.world, this.device, this.localDevice, this.description, this.settings, tokenizerVocab) = (world, device, localDevice, description, settings, model.VocabSize);
        groups = ProcessGroups.Create(world, RankOrder.For(world.Size, description.TensorParallel, description.ContextParallel, description.PipelineParallel));
        Model = VocabPadding.Pad(model, settings.MakeVocabSizeDivisibleBy, description.TensorParallel);
        Determinism.Set(settings.DeterministicMode);
        trainer = new ParallelTrainer(groups, Model, description, device, settings.Seed, settings.AdamOrDefault, settings.LossScaleOrDefault);
        data = SplitData.Open(settings, model.VocabSize, model.SeqLength, description.GlobalBatch);
        sampler = new GptSampler(data.Train, model.SeqLength);
        validation = data.Valid is null ? null : new GptSampler(data.Valid, model.SeqLength);
        host = new long[description.GlobalBatch * (model.SeqLength + 1)];
        DeviceName = DeviceProbe.Name(device.type == DeviceType.CUDA, localDevice);
    }

    public ModelSpec Model { get; }
    public Fusions Fusions => trainer.Fusions;
    public string DeviceName { get; }
    public long Parameters => trainer.Buffer.Count;
    public IReadOnlyList<BlendedSplit> Blends => data.Blends;
    public bool Writer => world.Rank == 0;

    public CheckpointMeta Resume(string root) => DistributedCheckpoint.Load(root, trainer, sampler);

    public void LoadWeights(IReadOnlyDictionary<string, Tensor> serial) =>
        trainer.LoadWeights((name, _) => WeightSplit.Of(name, Model).Shard(serial[name], groups.TensorRank, description.TensorParallel));

    public void Save(string root, long iteration) => DistributedCheckpoint.Save(root, iteration, settings.Seed, trainer, sampler);

    public StepResult Step(long iteration, double lr, RunStop stop)
    {
        using var scope = NewDisposeScope();
        var comm0 = trainer.CommunicationTime;
        var (loss, norm) = trainer.Step(lr, NextBatch(sampler), iteration);
        long end = Stopwatch.GetTimestamp();
        double communicationMs = (trainer.CommunicationTime - comm0).TotalMilliseconds;
        bool cuda = device.type == DeviceType.CUDA;
        long used = DeviceProbe.UsedBytes(cuda, localDevice);
        peakMemory = Math.Max(peakMemory, used);
        long allocated = DeviceProbe.AllocatedPeakBytes(cuda, localDevice) ?? -1;
        var agreed = tensor(new[] { (double)peakMemory, (double)stop.Pending, allocated }, device: device);
        world.AllReduce(agreed, ReduceOp.Max);
        var maxima = agreed.cpu().data<double>().ToArray();
        // The step's loss and norm reached the host inside it (its one sync), so it was enqueued and synced by its end.
        return new StepResult(loss, norm, end, end, used, (long)maxima[0], communicationMs, (StopReason)(int)maxima[1], trainer.GradScaler?.Scale,
            maxima[2] < 0 ? null : (long)maxima[2]);
    }

    public float Validate(long firstSample)
    {
        validation!.Position = firstSample;
        double sum = 0;
        for (long i = 0; i < settings.EvalIters; i++)
        {
            using var scope = NewDisposeScope();
            sum += trainer.Evaluate(NextBatch(validation));
        }
        return (float)(sum / settings.EvalIters);
    }

    /// <summary>The next global batch of <paramref name="from"/> (every rank reads the same), as this rank's micro-batch i: its
    /// data-parallel share.</summary>
    private Func<int, (Tensor Tokens, Tensor Labels)> NextBatch(GptSampler from)
    {
        int s = Model.SeqLength, b = description.MicroBatch, dp = description.DataParallel;
        from.Next(description.GlobalBatch, host);
        TokenRange.Check(host, tokenizerVocab);
        var batch = tensor(host, [description.GlobalBatch, s + 1]).to(device);
        return i =>
        {
            var rows = batch.narrow(0, (i * dp + groups.DataRank) * b, b);
            return (rows[.., ..s], rows[.., 1..]);
        };
    }

    public IReadOnlyList<long> PeakMemoryPerRank()
    {
        using var scope = NewDisposeScope();
        var all = zeros(world.Size, dtype: ScalarType.Float64, device: device);
        world.AllGather(tensor(new[] { (double)peakMemory }, device: device), all);
        return all.cpu().data<double>().Select(v => (long)v).ToList();
    }

    public IReadOnlyList<IReadOnlyList<OffloadRecord>>? OffloadedPerRank() =>
        description.OffloadRatio > 0 || description.CpuOffloadingLayers > 0 ? OffloadGather.All(world, trainer.Offloaded, device) : null;

    public void Dispose()
    {
        trainer.Dispose();
        groups.Dispose();
        data.Dispose();
    }
}
