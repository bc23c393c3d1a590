using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Simulator.Specs;

namespace Harness.Tests.Executor;

/// <summary>The launch variables a description names reach the C library's environment, which CUDA and libtorch read with
/// getenv; .NET's Environment.SetEnvironmentVariable alone changes only .NET's copy on Unix.</summary>
[Collection("Alone")]
public class CudaVariablesTests
{
    [Fact]
    public void TheDescriptionsVariablesAreWhatNativeCodeReads()
    {
        string? queues = ProcessEnvironment.Native(CudaVariables.MaxConnections), allocator = ProcessEnvironment.Native(AllocatorConf.Variable);
        try
        {
            var d = new RunDescription(Overlap: new OverlapSpec(DeviceMaxConnections: 3), ExpandableSegments: true, MaxSplitSizeMb: 64);
            CudaVariables.Apply(d);
            Assert.Equal("3", ProcessEnvironment.Native(CudaVariables.MaxConnections));
            Assert.Equal("expandable_segments:True,max_split_size_mb:64", ProcessEnvironment.Native(AllocatorConf.Variable));
            // What a run records is read back from there, and the processes it starts inherit the same values.
            Assert.Equal(3, CudaVariables.DeviceMaxConnections);
            Assert.Equal("expandable_segments:True,max_split_size_mb:64", CudaVariables.Allocator);
            Assert.Equal("3", Environment.GetEnvironmentVariable(CudaVariables.MaxConnections));
            // .NET's own setter does not reach native code: the reason for ProcessEnvironment.
            Environment.SetEnvironmentVariable(AllocatorConf.Variable, "max_split_size_mb:21");
            Assert.Equal("expandable_segments:True,max_split_size_mb:64", CudaVariables.Allocator);
            ProcessEnvironment.Set(AllocatorConf.Variable, null);
            Assert.Null(CudaVariables.Allocator);
            Assert.Null(Environment.GetEnvironmentVariable(AllocatorConf.Variable));
        }
        finally
        {
            ProcessEnvironment.Set(CudaVariables.MaxConnections, queues);
            ProcessEnvironment.Set(AllocatorConf.Variable, allocator);
        }
    }
}
