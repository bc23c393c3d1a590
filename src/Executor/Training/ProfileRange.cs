using Harness.Executor.Native;

namespace Harness.Executor.Training;

/// <summary>
/// Megatron-LM's --profile, --profile-step-start and --profile-step-end: the CUDA profiler range is opened
/// (cudaProfilerStart) before iteration <see cref="StepStart"/> + 1 and closed (cudaProfilerStop) after iteration
/// <see cref="StepEnd"/>, so `nsys profile --capture-range=cudaProfilerApi` or `ncu --profile-from-start off`
/// records only those steady-state iterations. Megatron's defaults: 10 and 12.
/// </summary>
public sealed record ProfileRange(long StepStart = 10, long StepEnd = 12)
{
    public IEnumerable<string> Validate(ExecutionDevice device, long trainIters)
    {
        if (device != ExecutionDevice.Cuda) yield return "--profile marks a CUDA profiler range; it needs --device cuda.";
        if (StepStart < 0 || StepEnd <= StepStart)
            yield return $"--profile-step-start {StepStart} and --profile-step-end {StepEnd} must satisfy 0 <= start < end.";
        else if (StepEnd > trainIters)
            yield return $"--profile-step-end {StepEnd} is past --train-iters {trainIters}; the range would never close.";
    }
}
