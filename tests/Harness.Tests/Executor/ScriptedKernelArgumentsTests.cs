using Harness.Simulator.Specs;
using Harness.Executor.Native;
using Harness.Executor.Transformer;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

[Collection("Alone")]
public class ScriptedKernelArgumentsTests
{
    public ScriptedKernelArgumentsTests() => TorchRuntime.Initialize(ExecutionDevice.Cpu);

    [Fact]
    public void NumbersReachTheKernelsIntactWhileTheCollectorRuns()
    {
        // The scalar arguments (RMSNorm's eps, rotary's half width) must stay alive until libtorch has read them: with
        // TorchSharp's temporary Scalars, a collection in between made libtorch read freed memory ("Expected false to
        // be true", 33 of 80,000 calls on 4 threads here).
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        var callers = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            using var scope = NewDisposeScope();
            var x = ones(2, 4);
            var table = ones(4);
            for (int i = 0; i < 5000; i++)
            {
                try
                {
                    using var y = ScriptedKernels.RmsNorm(x, table, 1e-5);
                    using var r = ScriptedKernels.Rotary(x, table, table, 2);
                }
                catch (Exception e) { failures.Add(e.Message.Split('\n')[0]); }
            }
        })).ToList();
        using (new ConstantCollection())
        {
            callers.ForEach(t => t.Start());
            callers.ForEach(t => t.Join());
        }
        Assert.Empty(failures);
    }
}
