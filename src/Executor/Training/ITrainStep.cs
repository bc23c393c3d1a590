using Harness.Executor.Data;
using Harness.Executor.Fused;
using Harness.Executor.Offload;
using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training;

/// <summary>
/// What one process does per iteration (Megatron's train_step) behind the one loop (<see cref="TrainingLoop"/>): a single
/// device (<see cref="Trainer"/>) or one rank of many (<see cref="ParallelRank"/>). The loop times and records; the step
/// owns the model, optimizer, data and checkpoints, and the agreement between ranks.
/// </summary>
public interface ITrainStep : IDisposable
{
    /// <summary>The model as built: its tables padded as Megatron pads them.</summary>
    ModelSpec Model { get; }

    /// <summary>The fusions this process runs (those asked for that work on its device).</summary>
    Fusions Fusions { get; }

    string DeviceName { get; }

    /// <summary>Parameters of this process's part of the model.</summary>
    long Parameters { get; }

    /// <summary>The blends of the data's shares (<see cref="SplitData.Blends"/>).</summary>
    IReadOnlyList<BlendedSplit> Blends { get; }

    /// <summary>Whether this process writes the run's records (rank 0).</summary>
    bool Writer { get; }

    /// <summary>Restores the newest checkpoint under <paramref name="root"/>; returns what it records (its iteration, the
    /// optimizer steps taken).</summary>
    CheckpointMeta Resume(string root);

    /// <summary>Sets the model's weights from the serial model's full weights, by serial name (tables padded as <see cref="Model"/>'s),
    /// each rank taking its part; the optimizer starts fresh (a run started from imported weights, --load-format hf).</summary>
    void LoadWeights(IReadOnlyDictionary<string, TorchSharp.torch.Tensor> serial);

    /// <summary>Saves the state after <paramref name="iteration"/> iterations under <paramref name="root"/> (collective).</summary>
    void Save(string root, long iteration);

    /// <summary>Iteration <paramref name="iteration"/> (0-based) at rate <paramref name="lr"/>: one host sync at its end.
    /// <paramref name="stop"/> is read after it; the returned <see cref="StepResult.Stop"/> is the same on every rank.</summary>
    StepResult Step(long iteration, double lr, RunStop stop);

    /// <summary>The validation loss (Megatron's evaluate): --eval-iters global batches of the validation share from its sample
    /// <paramref name="firstSample"/> on, forward only and without dropout, the mean over their micro-batches; the same on every
    /// rank (collective). Only for runs whose settings validate (<see cref="RunSettings.Validates"/>).</summary>
    float Validate(long firstSample);

    /// <summary>Every rank's peak memory, in rank order (collective); null for a single device.</summary>
    IReadOnlyList<long>? PeakMemoryPerRank();

    /// <summary>Every rank's activation-offload bookkeeping of the last step, in rank order (collective): per chunk and
    /// micro-batch under Megatron-Kwai's --offload-ratio, per offloaded layer and micro-batch under Megatron-core's
    /// --cpu-offloading-num-layers; null when the run offloads nothing.</summary>
    IReadOnlyList<IReadOnlyList<OffloadRecord>>? OffloadedPerRank();
}

/// <summary>What a step returns to the loop: host values read at its one sync, and the timestamps (Stopwatch ticks) at which
/// its work was enqueued and its results reached the host. <see cref="GradNorm"/> is null when the step was skipped (its
/// gradients overflowed: Megatron reports no norm then); <see cref="LossScale"/> is the loss scaler's scale after the step,
/// null when the run scales no loss. <see cref="MemoryPeakBytes"/> is the maximum over ranks; <see cref="CommunicationMs"/>
/// the time this rank spent communicating (null for a single device); <see cref="Stop"/> the stop due after it, agreed over
/// the ranks; <see cref="AllocatedPeakBytes"/> the caching allocator's peak allocated bytes so far, the maximum over ranks
/// (null off a GPU, or where the allocator's statistics cannot be read).</summary>
public readonly record struct StepResult(float Loss, float? GradNorm, long EnqueuedAt, long SyncedAt, long MemoryUsedBytes, long MemoryPeakBytes,
    double? CommunicationMs, StopReason Stop, double? LossScale = null, long? AllocatedPeakBytes = null)
{
    /// <summary>Whether the optimizer step was skipped on an overflow.</summary>
    public bool Skipped => GradNorm is null;
}
