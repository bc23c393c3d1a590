namespace Harness.Tests;

/// <summary>
/// Tests that run a thread collecting garbage without pause, to catch native handles freed by a finalizer before
/// libtorch read them. They run alone: their collections would reach every test running beside them.
/// </summary>
[CollectionDefinition("Collector", DisableParallelization = true)]
public sealed class CollectorCollection;

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
