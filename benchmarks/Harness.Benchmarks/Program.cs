using BenchmarkDotNet.Running;

// dotnet run -c Release --project benchmarks/Harness.Benchmarks [-- --job short]
BenchmarkSwitcher.FromAssembly(typeof(Harness.Benchmarks.SimulatorBenchmarks).Assembly).Run(args);
