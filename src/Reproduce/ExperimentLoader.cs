using System.Text.Json;
using System.Text.Json.Serialization;
using Harness.Simulator.Specs;

namespace Harness.Reproduce;

/// <summary>Reads experiment files (experiments/NAME.json) and checks that every row can be simulated.</summary>
public static class ExperimentLoader
{
    private static readonly JsonSerializerOptions Options = new()
    {
        // A misspelt knob would otherwise be silently ignored and the row simulated with a default.
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>The folder holding experiment files: ./experiments, or the first one found above the working directory.</summary>
    public static string? FindExperimentsDirectory(string? start = null)
    {
        for (var dir = new DirectoryInfo(start ?? Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "experiments");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>
    /// The experiments named by <paramref name="spec"/>: "all" (every file in <paramref name="directory"/>, by name),
    /// a name (NAME.json in the directory) or a path to a file.
    /// </summary>
    public static IReadOnlyList<Experiment> Resolve(string spec, string? directory)
    {
        if (spec != "all" && File.Exists(spec)) return [Load(spec)];
        if (directory is null)
            throw new ExperimentException(spec == "all"
                ? "no experiments folder found here or above; run from the repository or pass --experiments DIR."
                : $"'{spec}' is not a file, and no experiments folder was found here or above to name it from; run from the repository or pass --experiments DIR.");
        if (!Directory.Exists(directory))
            throw new ExperimentException($"--experiments {directory} is not a folder of experiment files.");
        var files = Directory.GetFiles(directory, "*.json").Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new ExperimentException($"--experiments {directory} holds no experiment files (*.json).");
        if (spec == "all") return files.Select(Load).ToList();
        if (File.Exists(Path.Combine(directory, spec + ".json"))) return [Load(Path.Combine(directory, spec + ".json"))];
        throw new ExperimentException($"'{spec}' is neither a file nor an experiment name; valid: all, " +
            $"{string.Join(", ", files.Select(f => Path.GetFileNameWithoutExtension(f)))}, or a path to a .json file.");
    }

    /// <summary>Reads and checks one experiment file.</summary>
    public static Experiment Load(string path)
    {
        Experiment? e;
        try
        {
            e = JsonSerializer.Deserialize<Experiment>(File.ReadAllText(path), Options);
        }
        catch (JsonException ex)
        {
            throw new ExperimentException($"{path}{JsonFileProblem.Describe(ex, typeof(Experiment))}");
        }
        if (e is null) throw new ExperimentException($"{path}: the file holds no experiment.");
        Check(e, path);
        return e;
    }

    private static void Check(Experiment e, string path)
    {
        if (e.Rows.Count == 0) throw new ExperimentException($"{path}: the experiment has no rows.");
        var metric = e.PaperMetric;
        foreach (var row in e.Rows)
        {
            if (!row.Published.Oom && metric.Published(row.Published) is null)
                throw new ExperimentException($"{e.Name}, row '{row.Label}': published has neither '{e.Metric}' nor \"oom\": true.");
            RowSetup.Resolve(e, row);
        }
        foreach (var method in e.Order ?? [])
            if (!e.Rows.Any(r => r.Method == method))
                throw new ExperimentException($"{e.Name}: order names method '{method}', which no row has.");
    }
}
