namespace Harness.Simulator;

// Contract placeholder owned by the simulator work (issue 2): Estimator.Estimate(model, cluster, config)
// returns a StepEstimate with StepTimeSeconds, TokensPerSecondPerGpu, ModelTflopsPerGpu, Mfu, Hfu,
// PeakMemoryBytes (max over ranks), Fits, and named time/memory breakdowns.
