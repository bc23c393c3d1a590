namespace Harness.Simulator.Schedule;

/// <summary>Per pipeline rank outcome of one simulated iteration. Arrays have one entry per pipeline rank.</summary>
/// <param name="ComputeEnd">When the rank's compute stream finishes its last backward.</param>
/// <param name="Finish">When its gradients are reduced as well (data-parallel sync after or overlapped).</param>
/// <param name="ActivationPeak">Peak bytes of activations and temporaries during the iteration.</param>
/// <param name="OffloadStall">Seconds ops waited for offload transfers.</param>
/// <param name="P2pBusy">Seconds the compute stream waited for its own p2p sends (when not overlapped).</param>
public sealed record ScheduleResult(
    double[] ComputeEnd, double[] Finish, double[] ActivationPeak, double[] OffloadStall, double[] P2pBusy)
{
    public static ScheduleResult Allocate(int p) =>
        new(new double[p], new double[p], new double[p], new double[p], new double[p]);

    /// <summary>The first <paramref name="p"/> entries, in arrays of their own.</summary>
    public ScheduleResult Copy(int p) => new(ComputeEnd[..p], Finish[..p], ActivationPeak[..p], OffloadStall[..p], P2pBusy[..p]);

    /// <summary>Writes this outcome over the first entries of <paramref name="target"/>'s arrays.</summary>
    public void CopyTo(ScheduleResult target)
    {
        ComputeEnd.CopyTo(target.ComputeEnd, 0);
        Finish.CopyTo(target.Finish, 0);
        ActivationPeak.CopyTo(target.ActivationPeak, 0);
        OffloadStall.CopyTo(target.OffloadStall, 0);
        P2pBusy.CopyTo(target.P2pBusy, 0);
    }
}
