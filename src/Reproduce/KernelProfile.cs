using System.Globalization;
using System.IO.Compression;
using System.Text.RegularExpressions;
using CsvHelper;

namespace Harness.Reproduce;

/// <summary>The kinds of kernel the simulator costs apart (<see cref="Simulator.Costs.KernelTime"/>).</summary>
public enum KernelKind { Gemm, Attention, Elementwise, Optimizer }

/// <summary>One kernel of a profile, by its name: how often it ran and its time in all, per profiled iteration.</summary>
public sealed record ProfiledKernel(string Name, KernelKind Kind, double CallsPerIteration, double SecondsPerIteration);

/// <summary>
/// A kernel profile of a harness run: Nsight Compute's raw CSV (`ncu --csv --page raw --metrics gpu__time_duration.sum`, as
/// scripts/gpu/profile-kernels.sh runs it over the run's --profile range; gzipped or not), each kernel's time given the kind
/// the simulator costs it as, by its name. ncu runs the kernels one at a time, so their sum is the GPU's busy time without
/// the gaps between kernels.
/// </summary>
public static partial class KernelProfile
{
    /// <summary>The kinds by kernel name, the first match winning: cuDNN's and flash attention's kernels (cuDNN's own helpers
    /// for the backward included) before cuBLAS's (cuDNN's names hold "sm90_" too); the optimizer step (the executor's fused
    /// AdamW, PyTorch's multi-tensor and fused Adam), the gradient norm it clips by, and the float32 fills that zero the main
    /// gradients before the step's first micro-batch; every other kernel is memory-bound work around the matmuls.</summary>
    private static readonly (KernelKind Kind, Regex Pattern)[] Kinds =
    [
        (KernelKind.Attention, AttentionKernel()),
        (KernelKind.Gemm, GemmKernel()),
        (KernelKind.Optimizer, OptimizerKernel()),
    ];

    [GeneratedRegex(@"flash|fmha|sdpa|attention|compute_dot_do_o|convert_dq", RegexOptions.IgnoreCase)]
    private static partial Regex AttentionKernel();

    [GeneratedRegex(@"gemm|gemv|nvjet|cutlass|xmma|cublas|splitKreduce", RegexOptions.IgnoreCase)]
    private static partial Regex GemmKernel();

    [GeneratedRegex(@"^adamw_step|multi_tensor_apply|FusedAdam|NormTwoOps|FillFunctor<float>", RegexOptions.IgnoreCase)]
    private static partial Regex OptimizerKernel();

    /// <summary>The kind the simulator costs the kernel named <paramref name="name"/> as.</summary>
    public static KernelKind KindOf(string name)
    {
        foreach (var (kind, pattern) in Kinds)
            if (pattern.IsMatch(name)) return kind;
        return KernelKind.Elementwise;
    }

    /// <summary>The kernels of the profile at <paramref name="path"/>, per iteration of the <paramref name="iterations"/> it
    /// covered, the longest first. InvalidDataException, in one sentence, for a file that is not such a profile.</summary>
    public static IReadOnlyList<ProfiledKernel> Read(string path, int iterations)
    {
        using var file = File.OpenRead(path);
        using var text = new StreamReader(path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file);
        // ncu writes its own log lines ahead of the CSV; the CSV's lines are the quoted ones.
        var lines = new List<string>();
        try
        {
            while (text.ReadLine() is { } line)
                if (line.StartsWith('"')) lines.Add(line);
        }
        catch (InvalidDataException) { throw new InvalidDataException($"{path} is not a gzip file (a kernels.csv.gz of scripts/gpu/profile-kernels.sh is)."); }
        using var csv = CsvReader.Create(new StringReader(string.Join('\n', lines)), new CsvReaderOptions { Separator = ',' }, leaveOpen: false);
        if (!csv.TryGetFieldIndex("Kernel Name", out int nameField) || !csv.TryGetFieldIndex(Metric, out int timeField))
            throw new InvalidDataException($"{path} is not Nsight Compute's raw CSV with kernel names and {Metric} (ncu --csv --page raw --metrics {Metric}).");
        double unit = 0;
        var totals = new Dictionary<string, (int Calls, double Seconds)>(StringComparer.Ordinal);
        while (csv.Read())
        {
            string name = csv.GetString(nameField), value = csv.GetString(timeField);
            // The row after the header gives the units, the kernels' rows their names.
            if (name.Length == 0) { unit = Seconds(value, path); continue; }
            if (unit == 0) throw new InvalidDataException($"{path} gives no unit for {Metric} before its first kernel.");
            if (!double.TryParse(value, NumberStyles.Float | NumberStyles.AllowThousands, CultureInfo.InvariantCulture, out double time))
                throw new InvalidDataException($"{path}: kernel '{name}' has the time '{value}', not a number.");
            var (calls, seconds) = totals.GetValueOrDefault(name);
            totals[name] = (calls + 1, seconds + time * unit);
        }
        if (totals.Count == 0) throw new InvalidDataException($"{path} holds no kernel times; did the run's --profile range run under ncu --profile-from-start off?");
        return totals.Select(k => new ProfiledKernel(k.Key, KindOf(k.Key), (double)k.Value.Calls / iterations, k.Value.Seconds / iterations))
            .OrderByDescending(k => k.SecondsPerIteration).ToList();
    }

    private const string Metric = "gpu__time_duration.sum";

    private static double Seconds(string unit, string path) => unit switch
    {
        "ns" or "nsecond" => 1e-9,
        "us" or "usecond" => 1e-6,
        "ms" or "msecond" => 1e-3,
        "s" or "second" => 1,
        _ => throw new InvalidDataException($"{path} gives {Metric} in '{unit}', not a unit of time (ns, us, ms or s)."),
    };
}
