using System.Runtime.InteropServices;

namespace Harness.Executor.Native;

/// <summary>
/// The process environment as native code reads it. .NET on Unix keeps its own copy of the environment:
/// Environment.SetEnvironmentVariable changes that copy (and what child processes inherit) but not the C library's
/// environ, which CUDA (CUDA_DEVICE_MAX_CONNECTIONS, read when the context is created), libtorch's caching allocator
/// (PYTORCH_CUDA_ALLOC_CONF, parsed when it starts) and cuBLAS's checks (CUBLAS_WORKSPACE_CONFIG) read with getenv.
/// A variable a run sets for them goes to both copies, and what a run records is read back from the native one.
/// </summary>
public static partial class ProcessEnvironment
{
    /// <summary>Sets <paramref name="name"/> for this process's native libraries and for the processes it starts; null
    /// removes it, as Environment.SetEnvironmentVariable does.</summary>
    public static void Set(string name, string? value)
    {
        Environment.SetEnvironmentVariable(name, value);
        if ((value is null ? UnsetNative(name) : SetNative(name, value, 1)) != 0)
            throw new InvalidOperationException($"setenv({name}) failed with errno {Marshal.GetLastPInvokeError()}.");
    }

    /// <summary>The value native code reads for <paramref name="name"/> (getenv); null when unset.</summary>
    public static string? Native(string name) => Marshal.PtrToStringUTF8(GetNative(name));

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SetNative(string name, string value, int overwrite);

    [LibraryImport("libc", EntryPoint = "unsetenv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int UnsetNative(string name);

    [LibraryImport("libc", EntryPoint = "getenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr GetNative(string name);
}
