using Harness.Executor.Distributed.Launch;

namespace Harness.Tests.Distributed;

public class LaunchEnvironmentTests
{
    private static Func<string, string?> Vars(params (string, string)[] pairs)
    {
        var d = pairs.ToDictionary(p => p.Item1, p => p.Item2);
        return k => d.GetValueOrDefault(k);
    }

    [Fact]
    public void ReadsTorchrunVariables()
    {
        var e = LaunchEnvironment.From(Vars(("RANK", "5"), ("WORLD_SIZE", "16"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node3"), ("MASTER_PORT", "6000")));
        Assert.Equal(new LaunchEnvironment(5, 16, 1, "node3", 6000, "torchrun variables"), e);
    }

    [Fact]
    public void UnderTorchrunTheRendezvousUsesThePortAboveTorchrunsOwnStore()
    {
        var e = LaunchEnvironment.From(Vars(("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "6000"), ("TORCHELASTIC_RUN_ID", "none")));
        Assert.Equal(6001, e.MasterPort);
    }

    [Fact]
    public void ReadsSlurmVariablesWithTheFirstNodeAsMaster()
    {
        var e = LaunchEnvironment.From(Vars(("SLURM_PROCID", "9"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1"), ("SLURM_NODELIST", "gpu[07-09,12],login1")));
        Assert.Equal(new LaunchEnvironment(9, 16, 1, "gpu07", LaunchEnvironment.DefaultPort, "Slurm variables"), e);
    }

    [Theory]
    [InlineData("node1", "node1")]
    [InlineData("a1,b2", "a1")]
    [InlineData("rack[1-2]-n[001-004]", "rack1-n001")]
    [InlineData("h[3,5-6]", "h3")]
    public void FirstHostOfASlurmNodeList(string list, string first) => Assert.Equal(first, LaunchEnvironment.FirstHost(list));

    [Fact]
    public void NoVariablesIsOneProcess() => Assert.Equal(LaunchEnvironment.Single, LaunchEnvironment.From(_ => null));

    [Fact]
    public void BadValuesGetOneSentence()
    {
        var e = Assert.Throws<ArgumentException>(() => LaunchEnvironment.From(Vars(("RANK", "4"), ("WORLD_SIZE", "4"))));
        Assert.Equal("rank 4 is not below the world size 4.", e.Message);
        e = Assert.Throws<ArgumentException>(() => LaunchEnvironment.From(Vars(("RANK", "x"), ("WORLD_SIZE", "4"))));
        Assert.Equal("RANK is 'x'; it must be a non-negative integer.", e.Message);
    }
}
