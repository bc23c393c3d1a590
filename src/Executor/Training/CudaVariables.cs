using System.Globalization;
using Harness.Executor.Native;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training;

/// <summary>
/// The launch environment a description names for the CUDA libraries of this process and of the ranks it starts, as
/// Megatron-LM's launch scripts export it: CUDA_DEVICE_MAX_CONNECTIONS (the hardware queues CUDA creates with the context)
/// and PYTORCH_CUDA_ALLOC_CONF (<see cref="AllocatorConf"/>), and under --deterministic-mode cuBLAS's workspace setting and
/// NCCL's algorithm. Set before any CUDA call, in the environment native code
/// reads (<see cref="ProcessEnvironment"/>); a run records what they read back (<see cref="DeviceMaxConnections"/>,
/// <see cref="Allocator"/>).
/// </summary>
public static class CudaVariables
{
    public const string MaxConnections = "CUDA_DEVICE_MAX_CONNECTIONS";

    /// <summary>NCCL's algorithm choice: under --deterministic-mode Megatron-LM requires it set to one that reduces in a fixed
    /// order (Tree, Ring, CollnetDirect, CollnetChain, or ^NVLS: not the NVSwitch's in-network reduction); Harness sets Ring
    /// where it is unset.</summary>
    public const string NcclAlgorithm = "NCCL_ALGO";

    public static void Apply(RunDescription d, RunSettings s)
    {
        if (d.OverlapOrDefault.DeviceMaxConnections is int queues)
            ProcessEnvironment.Set(MaxConnections, queues.ToString(CultureInfo.InvariantCulture));
        if (AllocatorConf.For(d) is string allocator) ProcessEnvironment.Set(AllocatorConf.Variable, allocator);
        if (!s.DeterministicMode) return;
        if (ProcessEnvironment.Native(Determinism.CuBlasWorkspaceVariable) is null)
            ProcessEnvironment.Set(Determinism.CuBlasWorkspaceVariable, Determinism.CuBlasWorkspace);
        if (ProcessEnvironment.Native(NcclAlgorithm) is null) ProcessEnvironment.Set(NcclAlgorithm, "Ring");
    }

    /// <summary>Why this process's environment cannot give <paramref name="s"/> deterministic kernels; null when it can.</summary>
    public static string? DeterminismRefusal(RunSettings s) =>
        s.DeterministicMode && ProcessEnvironment.Native(Determinism.CuBlasWorkspaceVariable) is string cublas
                            && cublas is not (":4096:8" or ":16:8")
            ? $"--deterministic-mode needs cuBLAS's fixed workspace, but {Determinism.CuBlasWorkspaceVariable} is '{cublas}' in this environment; unset it or set it to :4096:8 or :16:8."
            : null;

    /// <summary>The hardware queues CUDA creates in this process; null when the variable is unset (CUDA's default).</summary>
    public static int? DeviceMaxConnections =>
        int.TryParse(ProcessEnvironment.Native(MaxConnections), NumberStyles.Integer, CultureInfo.InvariantCulture, out int q) ? q : null;

    /// <summary>The caching allocator's settings in this process, as libtorch reads them.</summary>
    public static string? Allocator => ProcessEnvironment.Native(AllocatorConf.Variable);
}
