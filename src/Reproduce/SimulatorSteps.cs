using Harness.Simulator;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>The project's simulator (<see cref="Estimator"/>) as a reproduction calls it.</summary>
public static class SimulatorSteps
{
    public static SimulatedStep Estimate(ModelSpec model, ClusterSpec cluster, RunDescription config)
    {
        var e = Estimator.Estimate(model, cluster, config);
        return new SimulatedStep(e.StepTimeSeconds, e.TokensPerSecondPerGpu, e.PeakMemoryBytes, e.Fits);
    }
}
