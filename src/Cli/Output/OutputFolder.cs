namespace Harness.Cli.Output;

/// <summary>
/// The folder a command writes its files to, created before the work starts so that an unusable `--out`
/// is one sentence and exit code 2 up front rather than a stack trace after the run.
/// </summary>
public static class OutputFolder
{
    /// <summary>Creates the folder; returns null, or the sentence saying why it cannot be used.</summary>
    public static string? Create(string folder)
    {
        try
        {
            Directory.CreateDirectory(folder);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return $"--out '{folder}' cannot be used as a folder ({e.Message}); pass a writable folder.";
        }
    }
}
