using System.Runtime.ExceptionServices;

namespace Harness.Executor.Autograd;

/// <summary>
/// Carries an exception out of a custom autograd function's backward. libtorch calls that backward from native code,
/// and a .NET exception cannot unwind through native frames: it ends the process (a collective aborted because another
/// rank failed, thrown inside a gradient hook, took the whole test host down). So <see cref="Guard"/> catches it,
/// records it and hands libtorch undefined gradients (zeros) so backward runs to its end, and <see cref="Run"/>, around
/// every backward the executor starts, throws the recorded exception once backward has returned.
/// Backward over CPU tensors runs on the thread that started it (libtorch's engine drives CPU work on the caller), so
/// each in-process rank thread has its own record; on a GPU it runs on libtorch's device threads, where no
/// <see cref="Run"/> is active, and the record is the process's: a GPU run has one rank per process.
/// </summary>
public static class BackwardFailure
{
    private sealed class Record { public Exception? First; }

    [ThreadStatic] private static Record? _active;
    private static Exception? _offThread;

    /// <summary>Runs <paramref name="backward"/> and rethrows the first exception a guarded backward recorded during it;
    /// that one is the cause of anything libtorch itself threw afterwards, so it wins.</summary>
    public static void Run(Action backward)
    {
        var outer = _active;
        var record = _active = new Record();
        Exception? thrown = null;
        try { backward(); }
        catch (Exception e) { thrown = e; }
        finally { _active = outer; }
        var cause = record.First ?? Interlocked.Exchange(ref _offThread, null) ?? thrown;
        if (cause is not null) ExceptionDispatchInfo.Capture(cause).Throw();
    }

    /// <summary>The body of a custom function's backward: its gradients, or, when it throws, the exception recorded
    /// and <paramref name="inputs"/> undefined gradients (one per forward argument, as TorchSharp requires).</summary>
    public static List<TorchSharp.torch.Tensor> Guard(int inputs, Func<List<TorchSharp.torch.Tensor>> backward)
    {
        try { return backward(); }
        catch (Exception e)
        {
            if (_active is { } record) record.First ??= e;
            else Interlocked.CompareExchange(ref _offThread, e, null);
            return Enumerable.Repeat<TorchSharp.torch.Tensor>(null!, inputs).ToList();
        }
    }
}
