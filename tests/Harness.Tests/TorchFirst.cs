using System.Runtime.CompilerServices;
using Harness.Executor.Native;

namespace Harness.Tests;

/// <summary>
/// Loads libtorch through <see cref="TorchRuntime"/> when the test assembly loads. TorchSharp's own loader runs in the
/// static constructor of its torch class, at the first touch of anything on it (torch.CPU, a dtype, a tensor); without
/// TorchRuntime's handles it looks for libLibTorchSharp.so beside TorchSharp.dll, fails, and .NET keeps that failure for the
/// process, so every later test that uses a tensor fails with it. Tests that touch torch before calling Initialize (in a
/// field, a theory's data or a rank thread) are then safe in any order.
/// </summary>
internal static class TorchFirst
{
    [ModuleInitializer]
    internal static void Load() => TorchRuntime.Initialize();
}
