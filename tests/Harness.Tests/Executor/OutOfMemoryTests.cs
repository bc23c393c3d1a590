using Harness.Executor.Native;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Harness.Cli.Commands;

namespace Harness.Tests.Executor;

/// <summary>CPU out of memory in `harness run`: one sentence naming what did not fit and how to fit it, exit 2, not
/// libtorch's native frames.</summary>
public class OutOfMemoryTests
{
    [Fact]
    public void LibtorchsAllocatorFailuresAreRecognised()
    {
        Assert.True(AllocationFailure.Is(new ExternalException("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 16777216 bytes. Error code 12 (Cannot allocate memory)")));
        Assert.True(AllocationFailure.Is(new ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB")));
        Assert.False(AllocationFailure.Is(new ExternalException("shape '[2, 3]' is invalid for input of size 7")));
        Assert.False(AllocationFailure.Is(new InvalidOperationException("out of memory")));
    }

    [Theory]
    [InlineData]
    [InlineData("--device", "cpu", "--nproc-per-node", "2")]
    public async Task ARunUnderAMemoryLimitEndsInOneSentence(params string[] layout)
    {
        // A 6 GB address-space limit (ulimit -v; the child stays under 1 GB resident) and a 512 MB managed heap: s 32768 attention scores do not fit.
        string output = Path.Combine(TestTemp.Root, $"harness-oom-{Guid.NewGuid():N}");
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true };
        string harness = Path.Combine(AppContext.BaseDirectory, "harness");
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"ulimit -v 6000000; exec \"$0\" \"$@\"");
        foreach (var a in (string[])[harness, "run", "--model", "tiny-gpt2", "--seq-length", "32768", "--micro-batch-size", "2", "--global-batch-size", "4",
            "--mock-data", "--train-iters", "1", "--out", output, .. layout]) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_GCHeapHardLimit"] = "0x20000000";
        using var process = Process.Start(psi)!;
        var reading = process.StandardOutput.ReadToEndAsync();
        string stderr = await process.StandardError.ReadToEndAsync();
        string stdout = await reading;
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 2, stderr);
        string rank = layout.Length == 0 ? "" : "rank \\d: ";
        string parallel = layout.Length == 0 ? "" : " in this layout";
        Assert.Matches($"^harness run: {rank}micro-batch 2 x s 32768 of tiny-gpt2{parallel} does not fit in the CPU's memory; use a smaller --micro-batch-size or --seq-length.* or --recompute-granularity full\\.$", stderr.Trim());
        Assert.DoesNotContain("frame #", stdout + stderr);
        if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
    }
}
