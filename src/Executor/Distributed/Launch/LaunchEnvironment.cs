namespace Harness.Executor.Distributed.Launch;

/// <summary>
/// Where this process sits in a multi-process job, read from the variables its launcher set: torchrun's
/// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; `harness run --nproc-per-node`
/// sets the same), else Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODELIST: the master is the
/// first node of the allocation), else a single process. So a multi-node job needs no new code.
/// </summary>
public sealed record LaunchEnvironment(int Rank, int WorldSize, int LocalRank, string MasterAddress, int MasterPort, string Source)
{
    /// <summary>torchrun's default rendezvous port.</summary>
    public const int DefaultPort = 29500;

    public static LaunchEnvironment Single { get; } = new(0, 1, 0, "127.0.0.1", DefaultPort, "single process");

    public bool IsDistributed => WorldSize > 1;

    public static LaunchEnvironment FromProcess() =>
        From(name => Environment.GetEnvironmentVariable(name));

    /// <summary>Reads the variables through <paramref name="get"/>; throws <see cref="ArgumentException"/> with one sentence on a bad value.</summary>
    public static LaunchEnvironment From(Func<string, string?> get)
    {
        if (get("RANK") is { Length: > 0 } rank)
        {
            int r = Int(get, "RANK", rank);
            int world = Int(get, "WORLD_SIZE", get("WORLD_SIZE") ?? throw new ArgumentException("RANK is set but WORLD_SIZE is not; a torchrun-style launch sets both."));
            int local = get("LOCAL_RANK") is { Length: > 0 } l ? Int(get, "LOCAL_RANK", l) : r;
            // torchrun's own agent store already listens on MASTER_PORT (rank 0's host): rendezvous one port above it.
            int port = Port(get) + (get("TORCHELASTIC_RUN_ID") is { Length: > 0 } ? 1 : 0);
            return Checked(new LaunchEnvironment(r, world, local, get("MASTER_ADDR") is { Length: > 0 } a ? a : "127.0.0.1", port, "torchrun variables"));
        }
        if (get("SLURM_PROCID") is { Length: > 0 } procId)
        {
            int r = Int(get, "SLURM_PROCID", procId);
            int world = Int(get, "SLURM_NTASKS", get("SLURM_NTASKS") ?? throw new ArgumentException("SLURM_PROCID is set but SLURM_NTASKS is not; run under srun."));
            int local = get("SLURM_LOCALID") is { Length: > 0 } l ? Int(get, "SLURM_LOCALID", l) : 0;
            string master = get("MASTER_ADDR") is { Length: > 0 } a ? a
                : get("SLURM_NODELIST") is { Length: > 0 } nodes ? FirstHost(nodes)
                : throw new ArgumentException("under Slurm, MASTER_ADDR or SLURM_NODELIST must name the first node.");
            return Checked(new LaunchEnvironment(r, world, local, master, Port(get), "Slurm variables"));
        }
        return Single;
    }

    /// <summary>
    /// The first host of a Slurm node list: "gpu[07-09,12],cpu1" gives "gpu07"; several bracket groups
    /// ("rack[1-2]-n[01-04]") each take their first value; zero padding is kept.
    /// </summary>
    public static string FirstHost(string nodeList)
    {
        int depth = 0, end = nodeList.Length;
        for (int i = 0; i < nodeList.Length; i++)
        {
            char c = nodeList[i];
            if (c == '[') depth++;
            else if (c == ']') depth--;
            else if (c == ',' && depth == 0) { end = i; break; }
        }
        var first = nodeList[..end];
        var host = new System.Text.StringBuilder();
        for (int i = 0; i < first.Length; i++)
        {
            if (first[i] != '[') { host.Append(first[i]); continue; }
            int close = first.IndexOf(']', i);
            if (close < 0) throw new ArgumentException($"SLURM_NODELIST '{nodeList}' has an unclosed '['.");
            var range = first[(i + 1)..close].Split(',')[0];
            host.Append(range.Split('-')[0]);
            i = close;
        }
        if (host.Length == 0) throw new ArgumentException($"SLURM_NODELIST '{nodeList}' names no host.");
        return host.ToString();
    }

    private static int Port(Func<string, string?> get) =>
        get("MASTER_PORT") is { Length: > 0 } p ? Int(get, "MASTER_PORT", p) : DefaultPort;

    private static int Int(Func<string, string?> get, string name, string value) =>
        int.TryParse(value, out int v) && v >= 0 ? v : throw new ArgumentException($"{name} is '{value}'; it must be a non-negative integer.");

    private static LaunchEnvironment Checked(LaunchEnvironment e)
    {
        if (e.WorldSize < 1) throw new ArgumentException($"the world size is {e.WorldSize}; it must be at least 1.");
        if (e.Rank >= e.WorldSize) throw new ArgumentException($"rank {e.Rank} is not below the world size {e.WorldSize}.");
        if (e.MasterPort is < 1 or > 65535) throw new ArgumentException($"MASTER_PORT {e.MasterPort} is not a TCP port (1-65535).");
        return e;
    }
}
