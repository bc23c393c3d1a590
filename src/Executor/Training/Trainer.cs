using Harness.Simulator.Specs;
using Harness.Executor.Autograd;
using System.Diagnostics;
using Harness.Executor.Data;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Training.Records;
using Harness.Executor.Optimizer;
using Harness.Executor.TensorParallel;
using Harness.Executor.Transformer;
using Harness.Simulator.Costs;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>
/// Single-device training, visible top to bottom (nanoGPT's taste, Megatron's pieces): for each iteration, zero the
/// float32 gradients; for each micro-batch, forward, backward and fold its gradients in; clip, AdamW step at the
/// scheduled rate; one device sync to read loss and gradient norm. Each micro-batch runs in its own dispose scope so
/// no temporary outlives it on the GPU.
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly TrainingOptions options;
    private readonly Device device;
    private readonly GptModel model;
    private readonly ParamAndGradBuffer buffer;
    private readonly AdamW adam;
    private readonly ITokenSource source;
    private readonly GptSampler sampler;
    private readonly long[] hostTokens;
    private readonly double flopsPerIteration;
    private readonly Generator initGenerator;
    private readonly DropoutRng? dropout;
    private long lastSyncEnd = Stopwatch.GetTimestamp();
    private long peakMemory;

    /// <summary>Which libtorch runs it, and on what device (for the summary).</summary>
    public string Runtime { get; }
    public string DeviceName { get; }
    /// <summary>Fusions that were asked for but are off on this machine, each with why (no NVRTC, an older libtorch).</summary>
    public IReadOnlyList<string> FusionNotes { get; }
    public long Iteration { get; private set; }
    public long ParameterCount => buffer.Count;
    public TrainingOptions Options => options;

    public Trainer(TrainingOptions options)
    {
        this.options = options;
        Runtime = TorchRuntime.Initialize(options.Device, options.Libtorch);
        device = options.Device == ExecutionDevice.Cuda ? CUDA : CPU;
        DeviceName = DeviceProbe.Name(options.Device == ExecutionDevice.Cuda, 0);
        var m = options.Model;
        source = options.MockData ? new MockTokenSource(m.VocabSize, options.Seed) : new IndexedDataset(options.DataPath!);
        sampler = new GptSampler(source, m.SeqLength, options.Seed);
        manual_seed(options.Seed);
        initGenerator = new Generator((ulong)options.Seed);
        var dtype = options.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        var fusions = Fusions.Resolve(options.FusedKernels, options.GradientAccumulationFusion, device, dtype);
        FusionNotes = fusions.Notes;
        dropout = options.HiddenDropout > 0 || options.AttentionDropout > 0 ? new DropoutRng(options.Seed, 0, 0, sequenceParallel: false, device) : null;
        model = new GptModel(new TransformerConfig(VocabPadding.Pad(m, options.MakeVocabSizeDivisibleBy, 1), device, dtype, SerialTensorParallel.Instance, options.Recompute, InitGenerator: initGenerator,
            UseFusedKernels: fusions.Kernels, HiddenDropout: options.HiddenDropout, AttentionDropout: options.AttentionDropout, Dropout: dropout));
        buffer = new ParamAndGradBuffer(model, dtype, gradientAccumulationFusion: fusions.GradientAccumulation);
        adam = new AdamW(buffer, options.AdamOptions, fusions.Kernels);
        hostTokens = new long[options.MicroBatchSize * (m.SeqLength + 1)];
        flopsPerIteration = Flops.ModelFlopsPerToken(m) * options.GlobalBatchSize * m.SeqLength;
        if (options.Load is not null)
            Iteration = Checkpoint.Load(options.Load, m.Name, buffer, adam, sampler).Iteration;
    }

    /// <summary>Runs iterations until --train-iters or cancellation, reporting each; saves at the interval and at the end.</summary>
    public void Run(Action<IterationRecord> onIteration, CancellationToken cancel = default)
    {
        lastSyncEnd = Stopwatch.GetTimestamp();
        while (Iteration < options.TrainIters && !cancel.IsCancellationRequested)
        {
            if (Iteration == options.Profile?.StepStart) CudaProfiler.Start();
            var record = Step();
            if (Iteration == options.Profile?.StepEnd) CudaProfiler.Stop();
            onIteration(record);
            if (options.CheckpointDue(Iteration)) SaveCheckpoint();
        }
        // Stopped early (cancelled): what was trained is saved too.
        if (options.Save is not null && !options.CheckpointDue(Iteration)) SaveCheckpoint();
    }

    private void SaveCheckpoint() =>
        Checkpoint.Save(options.Save!, Iteration, options.Seed, options.Model.Name, buffer, adam, sampler);

    /// <summary>One iteration: GlobalBatch / MicroBatch micro-batches, then one optimizer step.</summary>
    public IterationRecord Step()
    {
        long start = Stopwatch.GetTimestamp();
        double hostGapMs = Stopwatch.GetElapsedTime(lastSyncEnd, start).TotalMilliseconds;
        int s = options.Model.SeqLength, b = options.MicroBatchSize, steps = options.AccumulationSteps;
        double lr = options.LearningRate.At(Iteration);
        dropout?.StartIteration(Iteration);
        float[] stats;
        long enqueued;
        using (var step = NewDisposeScope())
        {
            buffer.ZeroGrads();
            var lossSum = zeros(1, dtype: ScalarType.Float32, device: device);
            for (int i = 0; i < steps; i++)
            {
                using var micro = NewDisposeScope();
                var (tokens, labels) = NextMicroBatch(b, s);
                var loss = model.forward(tokens, labels) / steps;
                BackwardFailure.Run(() => loss.backward());
                buffer.AccumulateMicroBatch();
                lossSum.add_(loss.detach());
            }
            var norm = adam.ClipAndStep(lr);
            enqueued = Stopwatch.GetTimestamp();
            stats = cat(new[] { lossSum, norm.reshape(1).to(ScalarType.Float32) }).cpu().data<float>().ToArray();
        }
        long end = Stopwatch.GetTimestamp();
        double elapsed = Stopwatch.GetElapsedTime(lastSyncEnd, end).TotalSeconds;
        lastSyncEnd = end;
        Iteration++;
        long memory = DeviceProbe.UsedBytes(options.Device == ExecutionDevice.Cuda, 0);
        peakMemory = Math.Max(peakMemory, memory);
        double tokensPerSecond = (double)options.GlobalBatchSize * s / elapsed;
        double tflops = flopsPerIteration / elapsed / 1e12;
        return new IterationRecord(Iteration, elapsed * 1e3, tokensPerSecond, tflops, options.Mfu(tflops), stats[0], stats[1], lr, memory, peakMemory,
            hostGapMs, Stopwatch.GetElapsedTime(start, enqueued).TotalMilliseconds);
    }

    private (Tensor Tokens, Tensor Labels) NextMicroBatch(int b, int s)
    {
        sampler.Next(b, hostTokens);
        TokenRange.Check(hostTokens, options.Model.VocabSize);
        var all = tensor(hostTokens, new long[] { b, s + 1 }).to(device);
        return (all[.., ..s], all[.., 1..]);
    }

    public void Dispose()
    {
        adam.Dispose();
        buffer.Dispose();
        initGenerator.Dispose();
        dropout?.Dispose();
        model.Dispose();
        (source as IDisposable)?.Dispose();
    }
}
