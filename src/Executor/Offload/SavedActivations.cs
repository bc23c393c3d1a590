using Harness.Executor.Native;
using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// The tensors autograd saves during one model chunk's forward, as far as the executor's layers name them: what
/// Megatron-Kwai's record() collects with a saved-tensors pack hook (ATC'24 artifact, megatron/core/pipeline_parallel/offload.py).
/// TorchSharp has no saved-tensor hooks, so each layer hands over, at the point it makes it, every activation it knows an
/// operator saves (<see cref="Save"/>): the tensors the simulator counts (Activations.LayerTensors), not the parameters
/// nor the rotary tables, nor what libtorch's operators keep inside themselves (a composite norm's normalized input,
/// attention's log-sum-exp). Recording is per thread, as PyTorch's saved_tensors_hooks are: a rank's forward runs on its
/// thread, its backward's recomputations on libtorch's autograd thread, where nothing records. Each tensor is held as an
/// alias until the chunk's backward, which costs nothing while autograd holds it too. A contiguous tensor of an
/// address, shape and strides already recorded is the same tensor and counted once (offload_prologue's duplicate_flag,
/// which Kwai's hook needs for contiguous tensors saved twice; here the layers hand over what two operators save twice).
/// </summary>
public sealed class SavedActivations : IDisposable
{
    [ThreadStatic] private static SavedActivations? recording;

    private readonly List<Tensor> tensors = [];

    /// <summary>What autograd saves, in the order it saved it.</summary>
    public IReadOnlyList<Tensor> Tensors => tensors;

    /// <summary>Records what this thread's forward saves until the returned scope ends (none nests).</summary>
    public IDisposable Record()
    {
        if (recording is not null) throw new InvalidOperationException("a chunk's saved activations are already being recorded on this thread.");
        recording = this;
        return new Scope(null);
    }

    /// <summary>Stops recording on this thread until the returned scope ends: a pass whose tensors autograd does not keep
    /// (the no-grad forward of a recomputed function, which keeps only its inputs).</summary>
    public static IDisposable Pause()
    {
        var paused = recording;
        recording = null;
        return new Scope(paused);
    }

    /// <summary>Whether a chunk is being recorded on this thread.</summary>
    public static bool Recording => recording is not null;

    /// <summary>Hands <paramref name="tensor"/> to the chunk being recorded on this thread, if any; returns it.</summary>
    public static Tensor Save(Tensor tensor)
    {
        if (recording is { } r && !r.Holds(tensor)) r.tensors.Add(tensor.detach().DetachFromDisposeScope());
        return tensor;
    }

    private bool Holds(Tensor tensor) =>
        tensors.Any(t => TensorPointer.Of(t) == TensorPointer.Of(tensor) && t.shape.SequenceEqual(tensor.shape) && t.stride().SequenceEqual(tensor.stride()));

    public void Dispose()
    {
        foreach (var t in tensors) t.Dispose();
        tensors.Clear();
    }

    private sealed class Scope(SavedActivations? restore) : IDisposable
    {
        public void Dispose() => recording = restore;
    }
}
