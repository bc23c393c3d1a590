using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// What an optimizer carries from one step to the next over its part of the flat buffer: all of it for a replicated
/// optimizer, this rank's piece of every bucket for the distributed optimizer. A checkpoint is these tensors and the step
/// count; the model's weights follow from them.
/// </summary>
public interface IOptimizerState
{
    /// <summary>The ranges of the flat buffer whose elements the state tensors hold, concatenated in this order.</summary>
    IReadOnlyList<(long Offset, long Length)> Segments { get; }

    /// <summary>Master weights of the part (Megatron's main params): float32, or as the precision-aware optimizer stores them.</summary>
    Tensor Master { get; }

    /// <summary>The update rule, which names the <see cref="States"/>.</summary>
    IUpdateRule Rule { get; }

    /// <summary>The rule's per-element states over the part, in <see cref="IUpdateRule.States"/>' order (Adam's moments, SGD's
    /// momentum buffer): float32, or as the precision-aware optimizer stores them.</summary>
    IReadOnlyList<Tensor> States { get; }

    /// <summary>Optimizer steps taken (Adam's bias correction counts them).</summary>
    long Step { get; set; }

    /// <summary>After the master weights were set (a checkpoint was loaded): the model's weights from them, on every rank.</summary>
    void CopyMasterToParams();

    /// <summary>What a checkpoint holds of the part, as float32 tensors by file name: "master", then the states by
    /// <see cref="IUpdateRule.States"/>' names. <see cref="Master"/> and <see cref="States"/> themselves, unless they are stored
    /// in lower precision (DataParallel.DistributedOptimizer under the precision-aware optimizer: float32 copies, and further
    /// tensors that restore the stores to the bit, <see cref="OptionalCheckpointTensors"/>).</summary>
    IReadOnlyList<(string Name, Tensor Tensor)> CheckpointTensors() => [("master", Master), .. Rule.States.Zip(States)];

    /// <summary>Names among <see cref="CheckpointTensors"/> a checkpoint may lack (one saved by another optimizer).</summary>
    IReadOnlySet<string> OptionalCheckpointTensors => new HashSet<string>();

    /// <summary>After a checkpoint filled <see cref="CheckpointTensors"/>' tensors (<paramref name="read"/>: the names it had): store
    /// them where they are copies.</summary>
    void RestoreCheckpointTensors(IReadOnlyList<(string Name, Tensor Tensor)> loaded, IReadOnlySet<string> read) { }
}
