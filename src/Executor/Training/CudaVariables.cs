using System.Globalization;
using Harness.Executor.Native;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training;

/// <summary>
/// The launch environment a description names for the CUDA libraries of this process and of the ranks it starts, as
/// Megatron-LM's launch scripts export it: CUDA_DEVICE_MAX_CONNECTIONS (the hardware queues CUDA creates with the context)
/// and PYTORCH_CUDA_ALLOC_CONF (<see cref="AllocatorConf"/>). Set before any CUDA call, in the environment native code
/// reads (<see cref="ProcessEnvironment"/>); a run records what they read back (<see cref="DeviceMaxConnections"/>,
/// <see cref="Allocator"/>).
/// </summary>
public static class CudaVariables
{
    public const string MaxConnections = "CUDA_DEVICE_MAX_CONNECTIONS";

    public static void Apply(RunDescription d)
    {
        if (d.OverlapOrDefault.DeviceMaxConnections is int queues)
            ProcessEnvironment.Set(MaxConnections, queues.ToString(CultureInfo.InvariantCulture));
        if (AllocatorConf.For(d) is string allocator) ProcessEnvironment.Set(AllocatorConf.Variable, allocator);
    }

    /// <summary>The hardware queues CUDA creates in this process; null when the variable is unset (CUDA's default).</summary>
    public static int? DeviceMaxConnections =>
        int.TryParse(ProcessEnvironment.Native(MaxConnections), NumberStyles.Integer, CultureInfo.InvariantCulture, out int q) ? q : null;

    /// <summary>The caching allocator's settings in this process, as libtorch reads them.</summary>
    public static string? Allocator => ProcessEnvironment.Native(AllocatorConf.Variable);
}
