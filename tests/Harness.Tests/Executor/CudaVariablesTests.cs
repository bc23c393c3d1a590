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
            CudaVariables.Apply(d, new RunSettings());
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

    /// <summary>Under --deterministic-mode the launch also fixes cuBLAS's workspace and NCCL's algorithm where the environment
    /// leaves them unset, keeps what it sets, and refuses, in one sentence, a workspace setting cuBLAS cannot reproduce with.</summary>
    [Fact]
    public void DeterministicModeFixesCuBlassWorkspaceAndNcclsAlgorithm()
    {
        string? cublas = ProcessEnvironment.Native(Determinism.CuBlasWorkspaceVariable), nccl = ProcessEnvironment.Native(CudaVariables.NcclAlgorithm);
        try
        {
            var deterministic = new RunSettings(DeterministicMode: true);
            ProcessEnvironment.Set(Determinism.CuBlasWorkspaceVariable, null);
            ProcessEnvironment.Set(CudaVariables.NcclAlgorithm, "Tree");
            CudaVariables.Apply(new RunDescription(), new RunSettings());
            Assert.Null(ProcessEnvironment.Native(Determinism.CuBlasWorkspaceVariable));
            CudaVariables.Apply(new RunDescription(), deterministic);
            Assert.Equal(":4096:8", ProcessEnvironment.Native(Determinism.CuBlasWorkspaceVariable));
            Assert.Equal("Tree", ProcessEnvironment.Native(CudaVariables.NcclAlgorithm));
            Assert.Null(CudaVariables.DeterminismRefusal(deterministic));
            ProcessEnvironment.Set(CudaVariables.NcclAlgorithm, null);
            CudaVariables.Apply(new RunDescription(), deterministic);
            Assert.Equal("Ring", ProcessEnvironment.Native(CudaVariables.NcclAlgorithm));
            ProcessEnvironment.Set(Determinism.CuBlasWorkspaceVariable, ":0:0");
            Assert.Equal("--deterministic-mode needs cuBLAS's fixed workspace, but CUBLAS_WORKSPACE_CONFIG is ':0:0' in this environment; unset it or set it to :4096:8 or :16:8.",
                CudaVariables.DeterminismRefusal(deterministic));
            Assert.Null(CudaVariables.DeterminismRefusal(new RunSettings()));
        }
        finally
        {
            ProcessEnvironment.Set(Determinism.CuBlasWorkspaceVariable, cublas);
            ProcessEnvironment.Set(CudaVariables.NcclAlgorithm, nccl);
        }
    }
}
