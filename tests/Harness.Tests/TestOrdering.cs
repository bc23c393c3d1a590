// Test classes run one at a time. TorchSharp hands libtorch a tensor's or a scalar's native handle without keeping the
// managed object reachable, so a finalizer that runs during the call can free what libtorch is reading; garbage-heavy
// pure-C# tests (the search's brute-force enumerations) running beside the executor's make such collections frequent.
// The executor guards the sites found (Autograd/GuardedFunctions, ParamAndGradBuffer, WeightInit) and the collector stress
// tests (Parallel/CollectorStressTests) hunt for more; running the classes one at a time keeps one test's garbage from
// becoming another's crash.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
