using System.Net;
using System.Net.Sockets;
using Harness.Executor.Distributed;
using Harness.Executor.Distributed.Launch;

namespace Harness.Tests.Distributed;

public class LaunchTests
{
    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    [Fact]
    public async Task RendezvousGivesRankZerosBytesToEveryRank()
    {
        int port = FreePort();
        var id = Enumerable.Range(0, 128).Select(i => (byte)(i * 7)).ToArray();
        // Ranks start in reverse so the others must retry until rank 0 listens.
        var tasks = Enumerable.Range(0, 4).Reverse().Select(rank => Task.Run(() =>
            TcpRendezvous.Share(new LaunchEnvironment(rank, 4, rank, "127.0.0.1", port, "test"), rank == 0 ? id : null, TimeSpan.FromSeconds(30)))).ToArray();
        var received = await Task.WhenAll(tasks);
        Assert.All(received, r => Assert.Equal(id, r));
    }

    [Fact]
    public void RendezvousTimesOutWithAClearMessage()
    {
        int port = FreePort();
        var e = Assert.Throws<CommunicatorException>(() =>
            TcpRendezvous.Share(new LaunchEnvironment(1, 2, 1, "127.0.0.1", port, "test"), null, TimeSpan.FromMilliseconds(500)));
        Assert.Contains($"could not reach rank 0 at 127.0.0.1:{port}", e.Message);
    }

    [Fact]
    public void LauncherSetsTorchrunVariablesAndForwardsOutput()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = WorkerLauncher.Run(3, "/bin/sh", ["-c", "echo $RANK/$WORLD_SIZE/$LOCAL_RANK@$MASTER_ADDR:$MASTER_PORT"], 29777, stdout, stderr);
        Assert.Equal(0, code);
        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Order().ToArray();
        Assert.Equal(new[] { "0/3/0@127.0.0.1:29777", "[rank 1] 1/3/1@127.0.0.1:29777", "[rank 2] 2/3/2@127.0.0.1:29777" }, lines);
    }

    [Fact]
    public void AFailingRankStopsTheOthersAndItsErrorReachesTheUser()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var started = DateTime.UtcNow;
        int code = WorkerLauncher.Run(3, "/bin/sh", ["-c", "if [ $RANK = 1 ]; then echo 'boom on one' >&2; exit 7; fi; sleep 60"],
            29778, stdout, stderr, grace: TimeSpan.FromMilliseconds(200));
        Assert.Equal(7, code);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(30), "the sleeping ranks were not stopped");
        Assert.Contains("[rank 1] boom on one", stderr.ToString());
        Assert.Contains("harness: rank 1 exited with code 7", stderr.ToString());
    }

    [Fact]
    public void RanksStoppedBySignalAreNoFailure()
    {
        // Every rank exits with SIGTERM's code after saving (rank 1 a moment later): the launcher waits for all and returns it.
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = WorkerLauncher.Run(2, "/bin/sh", ["-c", "if [ $RANK = 1 ]; then sleep 0.3; echo saved; fi; exit 143"], 29779, stdout, stderr,
            grace: TimeSpan.FromMilliseconds(1));
        Assert.Equal(143, code);
        Assert.Contains("[rank 1] saved", stdout.ToString());
        Assert.DoesNotContain("exited with code", stderr.ToString());
    }
}
