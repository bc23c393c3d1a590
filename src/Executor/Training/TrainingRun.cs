using Harness.Executor.Data;
using Harness.Executor.Distributed;
using Harness.Executor.Native;
using Harness.Executor.Training.Interchange;
using Harness.Executor.Training.Records;
using Harness.Executor.Optimizer;
using Harness.Executor.Transformer;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Executor.Training;

/// <summary>
/// A run of the executor, from the three records that describe it: the model (its tokenizer's vocabulary; the tables are
/// padded when built), the <see cref="RunDescription"/> and the <see cref="RunSettings"/>. <see cref="Check"/> says up front
/// why it cannot run; <see cref="Prepare"/> opens the data and the checkpoint to load once; then one device runs it
/// (<see cref="RunSingleDevice"/>) or every rank of a world does (<see cref="RunRank"/>), through the one
/// <see cref="TrainingLoop"/>. Lines for the user go to <c>log</c> (rank 0's only); records go to <c>output</c>.
/// </summary>
public sealed class TrainingRun(ModelSpec model, RunDescription description, RunSettings settings, string output, Action<string> log)
{
    /// <summary>Iterations rank 0 recorded (metrics.csv, summary.json, plots) before a step failed; 0 if none did.</summary>
    public int RecordedBeforeFailure { get; private set; }

    /// <summary>What a failure message adds when iterations were recorded before it.</summary>
    public string Kept => RecordedBeforeFailure == 0 ? ""
        : $" (the {RecordedBeforeFailure} iterations done are in {output}: metrics.csv, summary.json, plots)";

    /// <summary>Every reason the executor cannot run these records on <paramref name="worldSize"/> ranks, as sentences naming
    /// the flag: the model's and the description's own, the description fields it does not run (<see cref="ExecutorSupport"/>),
    /// and the settings'.</summary>
    public static IReadOnlyList<string> Check(ModelSpec model, RunDescription description, RunSettings settings, int worldSize)
    {
        var errors = new List<string>(model.Validate());
        if (errors.Count == 0) errors.AddRange(description.Validate(model, worldSize));
        errors.AddRange(ExecutorSupport.Refusals(description));
        errors.AddRange(settings.Validate());
        // Both given is the settings' own mistake (RunSettings.Validate); neither is the executor's to refuse.
        if (settings.DataPath is null && !settings.MockData && !settings.PerSplitData) errors.Add("Give one of --data-path PREFIX, --train-data-path PREFIX and --mock-data.");
        if (settings.Save is not null && File.Exists(settings.Save)) errors.Add($"--save '{settings.Save}' is a file; it must name a checkpoint folder (new or existing).");
        if (description.Precision == Precision.Bf16 && settings.Device == ExecutionDevice.Cpu) errors.Add("--bf16 is for --device cuda; CPU runs train in float32.");
        // DropoutRng reseeds libtorch's CUDA generator per draw (the flash kernel can draw from no other), and ranks that are
        // threads on one GPU would share it: one rank's seed could reach another's draw.
        if (settings.RanksOnOneDevice && settings.Device == ExecutionDevice.Cuda && model.Dropout)
            errors.Add("--ranks-on-one-device on CUDA runs without dropout: the ranks would share libtorch's one CUDA generator, which each reseeds per mask; pass --hidden-dropout 0 --attention-dropout 0.");
        if (settings.Profile is not null && worldSize > 1)
            errors.Add("--profile opens the profiler range in single-device runs; profile a parallel run's ranks with nsys or ncu from the start instead.");
        if (settings.DeterministicMode && description.AttentionBackend == AttentionBackend.Fused)
            errors.Add("--deterministic-mode runs no cuDNN fused attention (libtorch has no deterministic one): use --attention-backend flash or auto, which then runs flash's deterministic backward.");
        if (CudaVariables.DeterminismRefusal(settings) is string determinism) errors.Add(determinism);
        if (!GpuPresets.All.ContainsKey(settings.Gpu)) errors.Add($"--gpu '{settings.Gpu}' is not a preset; valid: {string.Join(", ", GpuPresets.All.Keys)}.");
        return errors;
    }

    /// <summary>
    /// Opens the dataset and reads the checkpoint to load once, before any rank starts, so that a missing or damaged one, a
    /// dataset (or a --split share) shorter than a sample, a checkpoint of another model, weight split or optimizer, or one with nothing
    /// left to train is one sentence rather than the same failure from every rank (or a run that trains nothing and says
    /// nothing). Throws FileNotFoundException, InvalidDataException or ArgumentException with it.
    /// </summary>
    public void Prepare()
    {
        SplitData.Open(settings, model.VocabSize, model.SeqLength, description.GlobalBatch).Dispose();
        if (settings is { Load: string folder, LoadFormat: LoadFormat.Hf }) HfCheckpoint.Check(folder, model, description);
        else if (settings.Load is not null)
        {
            var (dir, meta) = Checkpoint.Latest(settings.Load);
            Checkpoint.RequireCompatible(dir, meta, model.Name, CheckpointLayout.Of(description, model), IUpdateRule.For(description, settings.AdamOrDefault, fused: false));
            if (meta.Iteration >= settings.TrainIters)
                throw new ArgumentException($"--load '{settings.Load}' holds iteration {meta.Iteration}, at or past --train-iters {settings.TrainIters}: nothing is left to train; raise --train-iters to train on.");
        }
    }

    /// <summary>Why the run stopped before --train-iters, once it ran (the same on every rank); <see cref="StopReason.None"/>
    /// when it did not.</summary>
    public StopReason Stopped { get; private set; }

    /// <summary>Trains on the settings' device; returns the iterations recorded.</summary>
    public IReadOnlyList<IterationRecord> RunSingleDevice(RunStop? stop = null)
    {
        using var step = new Trainer(model, description, settings);
        return Run(step, stop ?? new RunStop());
    }

    /// <summary>This process's rank of <paramref name="world"/>, on <paramref name="device"/> (CUDA device <paramref name="localDevice"/>
    /// of its node); collective: every rank calls it.</summary>
    public void RunRank(ICommunicator world, Device device, int localDevice, RunStop? stop = null)
    {
        using var step = new ParallelRank(world, device, localDevice, model, description, settings);
        Run(step, stop ?? new RunStop());
    }

    private IReadOnlyList<IterationRecord> Run(ITrainStep step, RunStop stop)
    {
        var (asRun, notes) = ExecutorSupport.AsRun(description, settings.Device, step.Fusions, CudaVariables.DeviceMaxConnections, CudaVariables.Allocator);
        // Read before the first step, so building the statistics shim (once per installation) falls outside the iterations.
        if (settings.Device == ExecutionDevice.Cuda && CachingAllocatorStats.Unavailable is string why)
            notes = [.. notes, $"the caching allocator's statistics could not be read ({why}): memory is NVML's only."];
        var run = new RunRecord(step.Model, asRun, settings, notes, step.DeviceName, TorchRuntime.Initialize(settings.Device, settings.Libtorch), step.Parameters,
            VocabPadding.Padded(model.VocabSize, settings.MakeVocabSizeDivisibleBy, 1), step.Blends);
        if (!step.Writer)
        {
            TrainingLoop.Run(step, run, recorder: null, log, stop);
            return [];
        }
        log(ProgressLines.Start(run));
        foreach (var note in notes) log($"harness run: note: {note}");
        using var recorder = new RunRecorder(output, run, log);
        try
        {
            (var rows, Stopped) = TrainingLoop.Run(step, run, recorder, log, stop);
            return rows;
        }
        catch when (recorder.Rows.Count > 0)
        {
            RecordedBeforeFailure = recorder.Rows.Count;
            throw;
        }
    }
}
