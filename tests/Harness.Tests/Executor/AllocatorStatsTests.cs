using Harness.Executor.Native;
using Harness.Executor.Training.Records;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>The caching allocator's peak allocated bytes in the record: read where a CUDA allocator exists, absent elsewhere,
/// and kept through metrics.csv.</summary>
public class AllocatorStatsTests
{
    [Fact]
    public void ACpuLibtorchHasNoCachingAllocatorToRead()
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        Assert.Null(CachingAllocatorStats.Read(0));
        Assert.False(CachingAllocatorStats.ResetPeaks(0));
        Assert.Contains("libc10_cuda.so", CachingAllocatorStats.Unavailable);
        Assert.Null(DeviceProbe.AllocatedPeakBytes(cuda: false, 0));
    }

    /// <summary>Without CUDA's libraries the libtorch shim is not built: switching where backward runs is a sentence saying
    /// why, not an exception; and every C function the executor looks up is one the embedded shim defines.</summary>
    [Fact]
    public void TheLibtorchShimDefinesWhatTheExecutorLooksUpAndIsASentenceWithoutCuda()
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        Assert.Null(LibtorchShim.Export("harness_autograd_multithreading"));
        Assert.Contains("libc10_cuda.so", AutogradThreads.RunBackwardOnThisThread());
        using var stream = typeof(LibtorchShim).Assembly.GetManifestResourceStream("Harness.Executor.Native.libtorch_shim.cpp")!;
        string source = new StreamReader(stream).ReadToEnd();
        foreach (var function in new[] { "harness_allocator_stats(int device, int64_t* out)", "harness_allocator_reset_peaks(int device)",
                     "harness_autograd_multithreading(int enabled)" })
            Assert.Contains($"int {function}", source);
        Assert.Contains("c10::AutogradState::get_tls_state().set_multithreading_enabled(enabled != 0)", source);
    }

    [Fact]
    public void MetricsCsvKeepsTheAllocatedPeakAndItsAbsence()
    {
        string path = Path.Combine(TestTemp.Root, $"harness-metrics-{Guid.NewGuid():N}.csv");
        try
        {
            IterationRecord[] rows =
            [
                new(1, 250.5, 1000, 400, 0.4, 10.5, 1.25, 1e-4, 60L << 30, 60L << 30, 0.2, 200, AllocatedPeakBytes: 41_234_567_890),
                new(2, 250.5, 1000, 400, 0.4, 10.25, null, 1e-4, 60L << 30, 60L << 30, 0.2, 200, LossScale: 65536, SkippedIterations: 1),
            ];
            MetricsCsv.Rewrite(path, rows).Dispose();
            var read = MetricsCsv.Read(path);
            Assert.Equal(41_234_567_890, read[0].AllocatedPeakBytes);
            Assert.Null(read[1].AllocatedPeakBytes);
            Assert.Equal(rows[1] with { ElapsedMs = read[1].ElapsedMs }, read[1]);
        }
        finally { File.Delete(path); }
    }
}
