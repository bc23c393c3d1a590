using System.Globalization;
using Harness.Executor.Data;
using Harness.Executor.Training;
using Harness.Executor.Training.Interchange;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Cli.Arguments;

/// <summary>
/// `harness run`'s flags, read by the codec into the three records a run is: the model, the <see cref="RunDescription"/>
/// and the <see cref="RunSettings"/>. Everything after <see cref="Read"/> uses only those. Without model flags the run is
/// the tiny default (<see cref="DefaultRun"/>), its own flags placed before the user's.
/// </summary>
public static class RunArguments
{
    /// <summary>`harness simulate`'s flags that describe a cluster or an output rather than a run, each with what a run takes
    /// instead.</summary>
    private static readonly (Flag Flag, string Instead)[] SimulateOnly =
    [
        (new("--gpus", true, ""), "a run's ranks are --nproc-per-node (or the launcher's WORLD_SIZE)"),
        (new("--gpus-per-node", true, ""), "a run's ranks on this node are --nproc-per-node"),
        (new("--cluster", true, ""), "a run names its GPU preset with --gpu"),
        (new("--json", false, ""), "a run writes summary.json to --out"),
        (new("--attention-flops", true, ""), "a run's MFU counts causal attention, as simulate's default"),
        (new("--print-model-json", false, ""), "harness simulate --print-model-json prints it"),
        (new("--print-cluster-json", false, ""), "harness simulate --print-cluster-json prints it"),
    ];

    /// <summary>Megatron's tokenizer flags, which set the model's vocabulary size as Megatron sets it from the tokenizer.</summary>
    private static readonly Flag[] TokenizerFlags =
    [
        new("--tokenizer-type", true, $"the tokenizer whose vocabulary sizes the model: {string.Join(", ", TextTokenizers.Types)}"),
        new("--tokenizer-model", true, "its file: a tokenizer.json (HuggingFaceTokenizer) or a SentencePiece tokenizer.model"),
    ];

    public static IReadOnlyList<Flag> Flags { get; } =
        [.. ModelFlags.Flags, .. RunDescriptionFlags.Flags, .. RunSettingsFlags.Flags, .. TokenizerFlags, new Flag("--help", false, "this help"), .. SimulateOnly.Select(s => s.Flag)];

    /// <summary>The command line with the default run's flags before it when it names no model (later flags win; a warm-up
    /// the user gives replaces the default's, whichever of --lr-warmup-iters and --lr-warmup-fraction it is).</summary>
    public static string[] WithDefaults(string[] args)
    {
        var modelFlags = ModelFlags.Flags.Select(f => f.Name).ToHashSet();
        if (args.Any(a => modelFlags.Contains(a.Split('=')[0]))) return args;
        string[] warmup = ["--lr-warmup-iters", "--lr-warmup-fraction"];
        bool ownWarmup = args.Any(a => warmup.Contains(a.Split('=')[0]));
        var defaults = new List<string>();
        for (int i = 0; i < DefaultRun.Arguments.Count; i += 2)
            if (!(ownWarmup && warmup.Contains(DefaultRun.Arguments[i]))) defaults.AddRange([DefaultRun.Arguments[i], DefaultRun.Arguments[i + 1]]);
        return [.. defaults, .. args];
    }

    /// <summary>The command line with the model flags of a Hugging Face folder's config.json before it when it loads one
    /// (`--load DIR --load-format hf`) and names no model flag itself, besides the sequence length and dropout, which the weights
    /// do not fix: the folder gives the model. A command line that does name the model is checked against the config instead,
    /// before the run starts.</summary>
    public static string[] WithHfModel(string[] args)
    {
        string[] notInTheWeights = ["--seq-length", "--hidden-dropout", "--attention-dropout"];
        var modelFlags = ModelFlags.Flags.Select(f => f.Name).Except(notInTheWeights).ToHashSet();
        if (args.Any(a => modelFlags.Contains(a.Split('=')[0]))) return args;
        string? Value(string flag)
        {
            string? found = null;
            for (int i = 0; i < args.Length; i++)
                if (args[i] == flag && i + 1 < args.Length) found = args[i + 1];
                else if (args[i].StartsWith(flag + "=", StringComparison.Ordinal)) found = args[i][(flag.Length + 1)..];
            return found;
        }
        return Value("--load-format") is "hf" && Value("--load") is string dir && HfCheckpoint.ModelFlags(dir) is { } flags ? [.. flags, .. args] : args;
    }

    /// <summary>
    /// The run the flags describe on <paramref name="launchedWorldSize"/> ranks (torchrun's or Slurm's WORLD_SIZE when a
    /// launcher started this process; else --nproc-per-node), or null with the reasons in <see cref="CommandLine.Errors"/>.
    /// </summary>
    public static (ModelSpec Model, RunDescription Description, RunSettings Settings)? Read(CommandLine cl, int? launchedWorldSize)
    {
        foreach (var (flag, instead) in SimulateOnly)
            if (cl.String(flag.Name) is not null || cl.Switch(flag.Name))
                cl.Errors.Add($"{flag.Name} is harness simulate's; {instead}.");
        var model = ModelFlags.Read(cl, DefaultRun.Model.Name);
        if (model is not null && TokenizerVocabulary(cl) is int vocab)
        {
            if (cl.String("--vocab-size") is string given && given != vocab.ToString(CultureInfo.InvariantCulture))
                cl.Errors.Add($"--vocab-size {given} differs from the tokenizer's {vocab}; Megatron sizes the vocabulary from the tokenizer: drop --vocab-size.");
            model = model with { VocabSize = vocab };
        }
        var settings = RunSettingsFlags.Read(cl);
        var description = RunDescriptionFlags.Read(cl, launchedWorldSize ?? settings.NprocPerNode);
        settings = settings with
        {
            DataPath = settings.DataPath ?? (settings.MockData || settings.PerSplitData ? null : DataBlend.Single(DefaultRun.DataPath)),
            Out = settings.Out ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)),
        };
        return cl.Errors.Count > 0 || model is null ? null : (model, description, settings);
    }

    /// <summary>The vocabulary size of the tokenizer --tokenizer-type and --tokenizer-model name (Megatron's tokenizer.vocab_size,
    /// from which it pads the tables); null when neither is given or they build none (with an error).</summary>
    private static int? TokenizerVocabulary(CommandLine cl)
    {
        string? model = cl.String("--tokenizer-model");
        if (cl.String("--tokenizer-type") is not string type)
        {
            if (model is not null) cl.Errors.Add("--tokenizer-model needs --tokenizer-type, which says how to read it.");
            return null;
        }
        if (TextTokenizers.Problem(type, model) is string problem)
        {
            cl.Errors.Add(problem);
            return null;
        }
        try { return TextTokenizers.Create(type, model).VocabSize; }
        catch (InvalidDataException e)
        {
            cl.Errors.Add(e.Message);
            return null;
        }
    }
}
