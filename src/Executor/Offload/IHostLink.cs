using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// The copies activation offload makes between the device and host memory. Copies are issued in order and complete by
/// <see cref="Fence"/>; the compute stream's later work sees them then. Every device tensor a copy reads or writes is allocated
/// before the <see cref="AfterCompute"/> the copy follows: the caching allocator reuses a block freed on the compute stream at
/// once, so a tensor allocated after that wait may be memory that compute work issued later (another rank thread's, on one
/// GPU) still uses. On a CPU there is one memory and one stream: each copy is a separate host tensor, made at once.
/// </summary>
public interface IHostLink : IDisposable
{
    /// <summary>Makes later copies wait for what the compute stream has issued so far (the tensors they read or fill).</summary>
    void AfterCompute();

    /// <summary>A host copy of the contiguous device tensor <paramref name="source"/>, complete at the next <see cref="Fence"/>;
    /// <paramref name="source"/> must stay allocated until then.</summary>
    Tensor ToHost(Tensor source);

    /// <summary>Copies the host tensor <paramref name="source"/> into the contiguous device tensor <paramref name="target"/> of
    /// its size, complete at the next <see cref="Fence"/>; both must stay allocated until then.</summary>
    void ToDeviceInto(Tensor source, Tensor target);

    /// <summary>Makes the compute stream's later work wait for every copy issued so far.</summary>
    void Fence();
}

/// <summary>The host link of a device.</summary>
public static class HostLink
{
    /// <summary>A copy stream of its own on a GPU (<see cref="CudaHostLink"/>), plain copies on the CPU.</summary>
    public static IHostLink For(Device device) =>
        device.type == TorchSharp.DeviceType.CUDA ? new CudaHostLink(device.index < 0 ? 0 : device.index) : HostMemoryLink.Instance;
}

/// <summary>The CPU's: copies are made when asked.</summary>
public sealed class HostMemoryLink : IHostLink
{
    public static readonly HostMemoryLink Instance = new();

    public void AfterCompute() { }

    public Tensor ToHost(Tensor source) => source.clone();

    public void ToDeviceInto(Tensor source, Tensor target)
    {
        using var _ = no_grad();
        using var view = source.view(target.shape);
        target.copy_(view);
    }

    public void Fence() { }

    public void Dispose() { }
}
