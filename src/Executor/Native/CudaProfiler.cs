
namespace Harness.Executor.Native;

/// <summary>The CUDA profiler range that Nsight tools capture (cudaProfilerStart / cudaProfilerStop), for --profile.</summary>
public static unsafe class CudaProfiler
{
    public static void Start() => CudaRuntime.Check(CudaRuntime.ProfilerStart(), "cudaProfilerStart");

    public static void Stop() => CudaRuntime.Check(CudaRuntime.ProfilerStop(), "cudaProfilerStop");
}
