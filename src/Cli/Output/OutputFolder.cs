namespace Harness.Cli.Output;

/// <summary>
/// Where a command writes, checked before the work starts so that an unusable `--out`, `--save` or `--csv` (a path under
/// /proc, under a regular file, in a folder without write permission) is one sentence and exit code 2 up front rather
/// than a stack trace after the run, with its work lost.
/// </summary>
public static class OutputFolder
{
    /// <summary>Creates the folder <paramref name="flag"/> names and writes a file in it; returns null, or the sentence
    /// saying why it cannot be used.</summary>
    public static string? Create(string folder, string flag = "--out")
    {
        try
        {
            Directory.CreateDirectory(folder);
            string probe = Path.Combine(folder, $".harness-write-test-{Environment.ProcessId}");
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return $"{flag} '{folder}' cannot be used as a folder ({e.Message}); pass a writable folder.";
        }
    }

    /// <summary>Whether the file <paramref name="flag"/> names can be written (its folder created, the file opened for
    /// writing; a file this made is removed again); returns null, or the sentence saying why not.</summary>
    public static string? Writable(string file, string flag)
    {
        if (Directory.Exists(file)) return $"{flag} '{file}' is a folder; pass a file path.";
        try
        {
            if (Path.GetDirectoryName(Path.GetFullPath(file)) is string folder) Directory.CreateDirectory(folder);
            bool existed = File.Exists(file);
            using (new FileStream(file, FileMode.Append, FileAccess.Write)) { }
            if (!existed) File.Delete(file);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return $"{flag} '{file}' cannot be written ({e.Message}); pass a writable file path.";
        }
    }
}
