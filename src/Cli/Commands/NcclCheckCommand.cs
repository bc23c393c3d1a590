using Harness.Megatron;
using Harness.Simulator.Specs;
using System.Diagnostics;
using System.Globalization;
using Harness.Cli.Arguments;
using Harness.Executor.Distributed;
using Harness.Executor.Distributed.Launch;
using Harness.Executor.Distributed.Nccl;
using Harness.Executor.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Cli.Commands;

/// <summary>
/// `harness nccl-check`: checks every NCCL call the executor uses on real GPUs against hand-computed values, for
/// any number of ranks (one per GPU: `--nproc-per-node N`, or under torchrun/Slurm), then measures all-reduce
/// bandwidth; `--watchdog-test` finally leaves a receive unmatched and expects the watchdog to abort it.
/// Prints one PASS/FAIL line per check; exit code 1 when any fails.
/// </summary>
public static class NcclCheckCommand
{
    private static readonly Flag[] Flags =
    {
        new("--nproc-per-node", true, "ranks (GPUs) on this node (default 1)"),
        new("--libtorch", true, "folder of libtorch's .so files (default: python3's PyTorch)"),
        new("--bandwidth-mib", true, "all-reduce message size for the bandwidth measure (default 256)"),
        new("--watchdog-test", false, "also check that an unmatched receive is aborted by the watchdog"),
        new("--help", false, "this help"),
    };

    public static int Run(string[] args)
    {
        if (CommandLine.ParseOrHelp(args, Flags, "usage: harness nccl-check [options]") is not { } cl) return 0;
        int nproc = cl.Int("--nproc-per-node") ?? 1;
        if (cl.Ignored.Count > 0) cl.Errors.Add($"options it does not take: {string.Join(' ', cl.Ignored)}; see harness nccl-check --help.");
        if (nproc < 1) cl.Errors.Add($"--nproc-per-node is {nproc}; it must be at least 1.");
        int bandwidthMib = cl.Int("--bandwidth-mib") ?? 256;
        if (bandwidthMib < 1) cl.Errors.Add($"--bandwidth-mib is {bandwidthMib}; it must be at least 1.");
        LaunchEnvironment env = LaunchEnvironment.Single;
        try { env = LaunchEnvironment.FromProcess(); }
        catch (ArgumentException e) { cl.Errors.Add(e.Message); }
        if (cl.Errors.Count == 0 && !env.IsDistributed && nproc > 1 && WorkerLauncher.Refusal(nproc) is string refusal) cl.Errors.Add(refusal);
        if (cl.Errors.Count > 0)
        {
            Console.Error.WriteLine($"harness nccl-check: {cl.Errors[0]}");
            return 2;
        }
        if (!env.IsDistributed && nproc > 1)
        {
            var (file, prefix) = DistributedRun.SelfCommand();
            return WorkerLauncher.Run(nproc, file, [.. prefix, "nccl-check", .. args], LaunchEnvironment.DefaultPort, Console.Out, Console.Error);
        }
        try { Console.WriteLine(TorchRuntime.Initialize(ExecutionDevice.Cuda, cl.String("--libtorch"))); }
        catch (NativeLoadException e)
        {
            Console.Error.WriteLine($"harness nccl-check: {e.Message}");
            return 2;
        }
        var timeout = TimeSpan.FromMinutes(2);
        var device = new Device(DeviceType.CUDA, env.LocalRank);
        using var world = NcclCommunicator.CreateWorld(env.Rank, env.WorldSize, env.LocalRank, id => TcpRendezvous.Share(env, id, timeout), timeout);
        Console.WriteLine($"rank {env.Rank}/{env.WorldSize}: NCCL {NcclCommunicator.Version} on {Nvml.DeviceName(env.LocalRank) ?? device.ToString()}");
        int failures = Checks(world, device).Count(ok => !ok);
        Bandwidth(world, device, bandwidthMib);
        if (cl.Switch("--watchdog-test") && !WatchdogAborts(env.Rank, env.LocalRank)) failures++;
        Console.WriteLine(failures == 0 ? $"rank {env.Rank}: all checks passed" : $"rank {env.Rank}: {failures} check(s) FAILED");
        return failures == 0 ? 0 : 1;
    }

    private static IEnumerable<bool> Checks(ICommunicator c, Device device)
    {
        int n = c.Size, r = c.Rank;
        float triangle = n * (n + 1) / 2f;
        Tensor On(float[] v, ScalarType t = ScalarType.Float32) => tensor(v).to(t).to(device);
        float[] Host(Tensor t) => t.to(ScalarType.Float32).cpu().data<float>().ToArray();
        bool Check(string name, float[] actual, float[] expected)
        {
            bool ok = actual.SequenceEqual(expected);
            Console.WriteLine($"rank {r}: {(ok ? "PASS" : "FAIL")} {name}{(ok ? "" : $": got [{string.Join(", ", actual)}], expected [{string.Join(", ", expected)}]")}");
            return ok;
        }
        using var scope = NewDisposeScope();

        var sum = On([r + 1, 2 * (r + 1)]); c.AllReduce(sum);
        yield return Check("all-reduce sum float32", Host(sum), [triangle, 2 * triangle]);
        var bf = On([r + 1, 4], ScalarType.BFloat16); c.AllReduce(bf);
        yield return Check("all-reduce sum bfloat16", Host(bf), [triangle, 4 * n]);
        var max = tensor(new long[] { r, -r }).to(device); c.AllReduce(max, ReduceOp.Max);
        yield return Check("all-reduce max int64", Host(max), [n - 1, 0]);
        var avg = On([r + 1]); c.AllReduce(avg, ReduceOp.Avg);
        yield return Check("all-reduce avg", Host(avg), [triangle / n]);
        // A view at an offset: THSTensor_data must include the storage offset, and the rest must stay untouched.
        var big = On([7, r + 1, r + 1, 9]); c.AllReduce(big.narrow(0, 1, 2));
        yield return Check("all-reduce of a view at an offset", Host(big), [7, triangle, triangle, 9]);
        var gathered = empty(2 * n, device: device); c.AllGather(On([10 * r, 10 * r + 1]), gathered);
        yield return Check("all-gather", Host(gathered), Enumerable.Range(0, n).SelectMany(k => new float[] { 10 * k, 10 * k + 1 }).ToArray());
        var block = empty(2, device: device); c.ReduceScatter(On(Enumerable.Range(0, 2 * n).Select(i => (float)i * (r + 1)).ToArray()), block);
        yield return Check("reduce-scatter", Host(block), [2 * r * triangle, (2 * r + 1) * triangle]);
        // All-to-all (grouped send/recv, this rank's own block included): block k comes from rank k, its elements 2r and 2r + 1.
        var exchanged = empty(2 * n, device: device); c.AllToAll(On(Enumerable.Range(0, 2 * n).Select(i => 100f * r + i).ToArray()), exchanged);
        yield return Check("all-to-all", Host(exchanged), Enumerable.Range(0, n).SelectMany(k => new float[] { 100 * k + 2 * r, 100 * k + 2 * r + 1 }).ToArray());
        var b = On([r, r]); c.Broadcast(b, n - 1);
        yield return Check("broadcast from the last rank", Host(b), [n - 1, n - 1]);
        var received = empty(1, device: device);
        using (c.Group())
        {
            c.Send(On([100 + r]), (r + 1) % n);
            c.Recv(received, (r + n - 1) % n);
        }
        yield return Check("send/recv ring in a group", Host(received), [100 + (r + n - 1) % n]);
        using (var half = c.Split(r % 2, r, "parity")!)
        {
            var members = On([1]); half.AllReduce(members);
            yield return Check("split by parity", [half.Size, Host(members)[0]], [(n + 1 - r % 2) / 2, (n + 1 - r % 2) / 2]);
        }
        using (var side = c.CreateCommunicationStream())
        {
            // --overlap-grad-reduce's ordering: 64 MiB written by a kernel on the default stream, all-reduced on the
            // non-blocking stream after an event wait, read by a kernel after the default stream waited in turn.
            var x = ones(1 << 24, device: device).Times(r + 1);
            side.WaitForCompute();
            using (side.Enqueue(c)) c.AllReduce(x);
            side.JoinCompute();
            var range = stack([x.min(), x.max()]);
            yield return Check("all-reduce on a communication stream, ordered by events", Host(range), [triangle, triangle]);
        }
        c.Barrier();
        yield return Check("statistics count calls", [c.Stats.Calls > 0 ? 1 : 0], [1]);
    }

    private static void Bandwidth(ICommunicator c, Device device, int mib)
    {
        using var scope = NewDisposeScope();
        using var buffer = ones(mib * 1024L * 1024 / 2, dtype: ScalarType.BFloat16, device: device);
        for (int i = 0; i < 3; i++) c.AllReduce(buffer);
        c.Barrier();
        const int iterations = 20;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++) c.AllReduce(buffer);
        c.Barrier();
        double seconds = sw.Elapsed.TotalSeconds / iterations, bytes = buffer.numel() * 2.0;
        double algbw = bytes / seconds / 1e9, busbw = algbw * 2 * (c.Size - 1) / c.Size;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"rank {c.Rank}: all-reduce {mib} MiB bf16 over {c.Size} rank(s): {seconds * 1e3:F3} ms, algorithm bandwidth {algbw:F1} GB/s, bus bandwidth {busbw:F1} GB/s; GPU time recorded {c.Stats.Time.TotalMilliseconds:F1} ms in {c.Stats.Calls} calls"));
    }

    /// <summary>A receive nobody sends to must end in the watchdog's abort and message, not a hang.</summary>
    private static bool WatchdogAborts(int rank, int deviceIndex)
    {
        string? message = null;
        var fired = new ManualResetEventSlim();
        // A one-rank communicator of its own, which the abort may leave unusable.
        using var comm = NcclCommunicator.CreateWorld(0, 1, deviceIndex, id => id!, TimeSpan.FromSeconds(3), m => { message = m; fired.Set(); });
        using var buffer = empty(1, device: new Device(DeviceType.CUDA, deviceIndex));
        var sw = Stopwatch.StartNew();
        try { comm.Recv(buffer, 0); }
        catch (CommunicatorException e)
        {
            Console.WriteLine($"rank {rank}: SKIP watchdog: NCCL refused the unmatched receive at once ({e.Message})");
            return true;
        }
        bool ok = fired.Wait(TimeSpan.FromSeconds(30));
        Console.WriteLine($"rank {rank}: {(ok ? "PASS" : "FAIL")} watchdog aborts an unmatched receive after {sw.Elapsed.TotalSeconds:F1} s: {message ?? "(no message)"}");
        return ok;
    }
}
