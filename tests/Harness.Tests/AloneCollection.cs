namespace Harness.Tests;

/// <summary>
/// Tests that must run with no other test beside them: those that collect garbage without pause (to catch native
/// handles freed by a finalizer before libtorch read them; their collections would reach every test running beside
/// them), and those that use process-wide state other tests' runs would see.
/// </summary>
[CollectionDefinition("Alone", DisableParallelization = true)]
public sealed class AloneCollection;

/// <summary>A thread that collects garbage and runs finalizers back to back until disposed.</summary>
public sealed class ConstantCollection : IDisposable
{
    private readonly Thread thread;
    private volatile bool stop;

    public ConstantCollection()
    {
        thread = new Thread(() => { while (!stop) { GC.Collect(); GC.WaitForPendingFinalizers(); } });
        thread.Start();
    }

    public void Dispose()
    {
        stop = true;
        thread.Join();
    }
}
