using TorchSharp;
using System.Diagnostics;
using Harness.Executor.Autograd;
using Harness.Executor.Data;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Offload;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;
using static Harness.Executor.Native.HeldScalars;

namespace Harness.Executor.Training;

/// <summary>
/// Single-device training step, visible top to bottom (nanoGPT's taste, Megatron's pieces): zero the main gradients (float32,
/// or 16-bit without --accumulate-allreduce-grads-in-fp32: <see cref="ParamAndGradBuffer"/>);
/// for each micro-batch, forward, backward (of the loss times the loss scale, when the run scales it:
/// <see cref="Optimizer.GradScaler"/>) and fold its gradients in; unscale them and skip the step if any overflowed; clip,
/// optimizer step (--optimizer adam or sgd) at the scheduled rate; one device sync to read loss and gradient norm (two with a loss scaler, whose
/// overflow check is read first, as Megatron reads it). Each micro-batch runs in its own dispose scope so no temporary outlives it on the
/// GPU. The model is the serial one (<see cref="SerialTensorParallel"/>), with no communication at all.
/// </summary>
public sealed class Trainer : ITrainStep
{
    private readonly RunDescription description;
    private readonly RunSettings settings;
    private readonly int tokenizerVocab;
    private readonly Device device;
    private readonly GptModel model;
    private readonly ParamAndGradBuffer buffer;
    private readonly ReplicatedOptimizer optimizer;
    private readonly SplitData data;
    private readonly GptSampler sampler;
    private readonly GptSampler? validation;
    private readonly long[] hostTokens;
    private readonly DropoutRng? dropout;
    private readonly IHostLink? hostLink;
    private GradScaler? scaler;
    private long peakMemory;
    private IReadOnlyList<OffloadRecord> offloaded = [];

    /// <summary>
    /// Builds <paramref name="model"/> (its tables padded by --make-vocab-size-divisible-by; the data is checked against the
    /// tokenizer's vocabulary it names) as <paramref name="description"/> describes it, on the device of <paramref name="settings"/>.
    /// Throws ArgumentException with the first reason the description cannot run on one device.
    /// </summary>
    public Trainer(ModelSpec model, RunDescription description, RunSettings settings)
    {
        var errors = description.Validate(model, 1).Concat(ExecutorSupport.Refusals(description)).ToList();
        if (errors.Count > 0) throw new ArgumentException(errors[0]);
        (this.description, this.settings, tokenizerVocab) = (description, settings, model.VocabSize);
        TorchRuntime.Initialize(settings.Device, settings.Libtorch);
        Determinism.Set(settings.DeterministicMode);
        bool cuda = settings.Device == ExecutionDevice.Cuda;
        device = cuda ? CUDA : CPU;
        DeviceName = DeviceProbe.Name(cuda, 0);
        data = SplitData.Open(settings, model.VocabSize, model.SeqLength, description.GlobalBatch);
        sampler = new GptSampler(data.Train, model.SeqLength);
        validation = data.Valid is null ? null : new GptSampler(data.Valid, model.SeqLength);
        manual_seed(settings.Seed);
        var dtype = ExecutorSupport.ComputeDtype(description.Precision);
        Fusions = Fusions.Resolve(description.FusedKernels, description.FusedGptKernels, description.GradientAccumulationFusion, device, dtype,
            AttentionKernel.Select(model, description, device, dtype), GptKernels.Serves(model));
        dropout = model.Dropout ? new DropoutRng(settings.Seed, 0, 0, sequenceParallel: false, device) : null;
        Model = VocabPadding.Pad(model, settings.MakeVocabSizeDivisibleBy, 1);
        this.model = new GptModel(new TransformerConfig(Model, device, dtype, SerialTensorParallel.Instance, description.Recompute, InitSeed: settings.Seed,
            UseFusedKernels: Fusions.Kernels, UseFusedGptKernels: Fusions.GptKernels, FusedSwiGlu: description.FusedSwiGlu, HiddenDropout: model.HiddenDropout, AttentionDropout: model.AttentionDropout, Dropout: dropout,
            FusedNorm: description.FusedNorm, FusedElementwise: description.FusedElementwise));
        buffer = new ParamAndGradBuffer(this.model, dtype, gradientAccumulationFusion: Fusions.GradientAccumulation, mainGradsInFp32: description.GradientsInFp32);
        optimizer = new ReplicatedOptimizer(buffer, IUpdateRule.For(description, settings.AdamOrDefault, Fusions.Kernels));
        scaler = GradScaler.For(description, settings.LossScaleOrDefault);
        hostTokens = new long[description.MicroBatch * (model.SeqLength + 1)];
        if (description.CpuOffloadingLayers > 0) hostLink = HostLink.For(device);
    }

    public ModelSpec Model { get; }
    public Fusions Fusions { get; }
    public string DeviceName { get; }
    public long Parameters => buffer.Count;
    public IReadOnlyList<BlendedSplit> Blends => data.Blends;
    public bool Writer => true;

    public CheckpointMeta Resume(string root)
    {
        var meta = Checkpoint.Load(root, Model.Name, buffer, optimizer, sampler);
        if (meta.GradScaler is { } saved) scaler = scaler?.Restore(saved);
        return meta;
    }

    public void LoadWeights(IReadOnlyDictionary<string, Tensor> serial)
    {
        // Into the model's weights, and the float32 master weights from them, as Megatron makes its main params from the model's
        // (megatron/core/optimizer/optimizer.py, Float16OptimizerWithFloat16Params: param.detach().clone().float(), d98e8a6) and
        // as every rank of a parallel run loads them (ParallelTrainer.LoadWeights).
        using (no_grad())
            foreach (var (name, p, _) in buffer.Layout)
                p.copy_(serial[name]);
        buffer.CopyParamsToMaster(0, buffer.Count);
    }

    public void Save(string root, long iteration) => Checkpoint.Save(root, iteration, settings.Seed, Model.Name, buffer, optimizer, scaler, sampler);

    public IReadOnlyList<long>? PeakMemoryPerRank() => null;

    public IReadOnlyList<IReadOnlyList<OffloadRecord>>? OffloadedPerRank() => hostLink is null ? null : [offloaded];

    /// <summary>One iteration: GlobalBatch / MicroBatch micro-batches, then one optimizer step.</summary>
    public StepResult Step(long iteration, double lr, RunStop stop)
    {
        int s = Model.SeqLength, b = description.MicroBatch, steps = description.NumMicroBatches;
        dropout?.StartIteration(iteration);
        float[] stats;
        long enqueued;
        bool skipped = false;
        var records = new List<OffloadRecord>();
        using (var step = NewDisposeScope())
        {
            buffer.ZeroGrads();
            var lossSum = zeros(1, dtype: ScalarType.Float32, device: device);
            // Numbers as Scalars held until the calls return (HeldScalars says why).
            using Scalar perMicroBatch = steps.ToScalar(), lossScale = (scaler?.Scale ?? 1).ToScalar();
            for (int i = 0; i < steps; i++)
            {
                using var micro = NewDisposeScope();
                var (tokens, labels) = NextMicroBatch(sampler, b, s);
                // Megatron-core's CPU offloading: the layers' activations leave during forward and come back in backward.
                using var layers = hostLink is null ? null : new LayerOffloader(Model.NumLayers, description.CpuOffloadingLayers, hostLink);
                var loss = (layers is null ? model.forward(tokens, labels) : model.Loss(model.Decode(model.Embed(tokens), layers.AtLayerInput), labels)).div(perMicroBatch);
                var scaled = scaler is null ? loss : loss.mul(lossScale);
                BackwardFailure.Run(() => scaled.backward());
                if (layers is not null) records.AddRange(layers.Records(i));
                buffer.AccumulateMicroBatch();
                lossSum.add_(loss.detach(), One);
            }
            var grads = ParamAndGradBuffer.Float32Grads(buffer.MainGrads);
            if (scaler is not null)
            {
                using var flag = MainGradUnscale.UnscaleAndFindInf([grads], scaler.InverseScale, device);
                using var host = flag.cpu();
                skipped = host.item<float>() > 0;
                scaler = scaler.Update(skipped);
            }
            // A skipped step has no norm (Megatron computes none) and leaves the weights and the optimizer's state as they were.
            var reported = skipped ? lossSum : cat(new[] { lossSum, optimizer.ClipAndStep(lr, grads).reshape(1).to(ScalarType.Float32) });
            enqueued = Stopwatch.GetTimestamp();
            stats = reported.cpu().data<float>().ToArray();
        }
        long synced = Stopwatch.GetTimestamp();
        offloaded = records;
        bool cuda = settings.Device == ExecutionDevice.Cuda;
        long memory = DeviceProbe.UsedBytes(cuda, 0);
        peakMemory = Math.Max(peakMemory, memory);
        return new StepResult(stats[0], skipped ? null : stats[1], enqueued, synced, memory, peakMemory, null, stop.Pending, scaler?.Scale,
            DeviceProbe.AllocatedPeakBytes(cuda, 0));
    }

    public float Validate(long firstSample)
    {
        int s = Model.SeqLength, b = description.MicroBatch, steps = description.NumMicroBatches;
        validation!.Position = firstSample;
        if (dropout is not null) dropout.Evaluating = true;
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var lossSum = zeros(1, dtype: ScalarType.Float32, device: device);
            for (long i = 0; i < settings.EvalIters * steps; i++)
            {
                using var micro = NewDisposeScope();
                var (tokens, labels) = NextMicroBatch(validation, b, s);
                lossSum.add_(model.forward(tokens, labels).to(ScalarType.Float32), One);
            }
            return lossSum.cpu().item<float>() / (settings.EvalIters * steps);
        }
        finally
        {
            if (dropout is not null) dropout.Evaluating = false;
        }
    }

    private (Tensor Tokens, Tensor Labels) NextMicroBatch(GptSampler from, int b, int s)
    {
        from.Next(b, hostTokens);
        TokenRange.Check(hostTokens, tokenizerVocab);
        var all = tensor(hostTokens, new long[] { b, s + 1 }).to(device);
        return (all[.., ..s], all[.., 1..]);
    }

    public void Dispose()
    {
        optimizer.Dispose();
        buffer.Dispose();
        hostLink?.Dispose();
        dropout?.Dispose();
        model.Dispose();
        data.Dispose();
    }
}
