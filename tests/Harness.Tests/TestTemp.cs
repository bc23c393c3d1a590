namespace Harness.Tests;

/// <summary>
/// The folder every test writes its runs, checkpoints and files under: one per test process, deleted when the process
/// exits, so a suite's training runs (tens of MB each) do not pile up in the machine's temporary folder. The test host
/// may be ended before it has deleted everything, so a new one also deletes the folders of test processes that are gone.
/// </summary>
internal static class TestTemp
{
    private const string Prefix = "harness-tests-";

    public static string Root { get; } = Create();

    private static string Create()
    {
        foreach (var stale in Directory.EnumerateDirectories(Path.GetTempPath(), Prefix + "*"))
            if (int.TryParse(Path.GetFileName(stale)[Prefix.Length..], out int pid) && !Running(pid)) Delete(stale);
        string root = Path.Combine(Path.GetTempPath(), Prefix + Environment.ProcessId);
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Delete(root);
        return root;
    }

    private static bool Running(int pid)
    {
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException) { return false; }     // no such process
        catch (InvalidOperationException) { return false; }
    }

    private static void Delete(string folder)
    {
        try { Directory.Delete(folder, recursive: true); }
        catch (IOException) { }                         // a file still open elsewhere: the next test process deletes it
        catch (UnauthorizedAccessException) { }
    }
}
