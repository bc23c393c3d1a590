using Harness.Megatron;
using System.Globalization;
using System.Text.RegularExpressions;
using Harness.Search;
using Harness.Simulator.Specs;

namespace Harness.Cli.Arguments;

/// <summary>What `harness search` reads besides the model and cluster: the space's constraints and how to run.</summary>
public sealed record SearchInput(SearchSpace Space, SearchOptions Options, bool Json, string OutputDirectory);

/// <summary>
/// `harness search`'s own flags. Megatron's parallel flags take comma-separated lists here (each narrows that
/// dimension of the space): <c>--tensor-model-parallel-size 2,4,8</c>.
/// </summary>
public static partial class SearchArguments
{
    /// <summary>A flag of the run description by its one name (<see cref="RunDescriptionFlags.LayoutFlags"/>), with the help
    /// saying how the search reads it.</summary>
    private static Flag Narrow(string name, string help) =>
        RunDescriptionFlags.LayoutFlags.Single(f => f.Name == name) with { Help = help };

    public static readonly Flag[] Flags =
    [
        Narrow("--global-batch-size", "global batch size (required)"),
        Narrow("--tensor-model-parallel-size", "only these tensor-parallel sizes (list)"),
        Narrow("--pipeline-model-parallel-size", "only these pipeline-parallel sizes (list)"),
        Narrow("--context-parallel-size", "only these context-parallel sizes (list)"),
        Narrow("--cp-comm-type", "only these context-parallel exchanges where c > 1 (list of p2p, allgather, a2a, a2a+p2p; default all)"),
        Narrow("--hierarchical-context-parallel-sizes", "not a constraint: a2a+p2p is searched with every all-to-all size the heads split over"),
        new("--data-parallel-size", true, "only these data-parallel sizes (list)"),
        Narrow("--micro-batch-size", "only these micro-batch sizes (list)"),
        Narrow("--num-layers-per-virtual-pipeline-stage", "only these layers per virtual stage (list; 'none' = no interleaving)"),
        Narrow("--decoder-first-pipeline-num-layers", "only these layers on the first pipeline stage (list; 'none' = as many as the middle stages)"),
        Narrow("--decoder-last-pipeline-num-layers", "only these layers on the last pipeline stage (list; 'none' = as the middle stages)"),
        Narrow("--sequence-parallel", "only configs with sequence parallelism"),
        new("--no-sequence-parallel", false, "only configs without sequence parallelism"),
        new("--recompute", true, $"only these recomputations (list of {string.Join(", ", RecomputeChoices.AllNames)})"),
        Narrow("--recompute-granularity", "Megatron's word for --recompute: only full or only selective recomputation (list)"),
        Narrow("--recompute-activations", "Megatron's older switch for --recompute-granularity selective"),
        Narrow("--recompute-method", "full recomputation: only these methods (uniform, block)"),
        Narrow("--recompute-num-layers", "full recomputation: only these num-layers (list)"),
        new("--no-offload", false, "no activation offload (alpha 0)"),
        Narrow("--offload-ratio", "only these offload ratios (list)"),
        new("--offload-step", true, "offload ratio grid step (default 0.05)"),
        Narrow("--zero-stage", "only these ZeRO stages (list of 0-3)"),
        Narrow("--kaimm-recompute-norm", "only Megatron-Kwai's norm recompute (with --kaimm-recompute-mlp-activation-func: both)"),
        Narrow("--kaimm-recompute-mlp-activation-func", "only Megatron-Kwai's SwiGLU-output recompute"),
        Narrow("--kaimm-offload-activation-ratio", "Megatron-Kwai's name of --offload-ratio (list)"),
        Narrow("--use-distributed-optimizer", "only Megatron's distributed optimizer (ZeRO stage 1)"),
        Narrow(RunDescriptionFlags.ShardingStrategy, "with --use-megatron-fsdp: only these strategies (list of no_shard, optim, optim_grads, optim_grads_params; default all, with every layout)"),
        Narrow("--sync-factor", "CAAT-Net sync factors p to try (list; default 1)"),
        new("--memory-limit", true, "a config fits when the allocator's reservation at its peak is at most this, e.g. 70GiB (default: the GPU's memory less 2 GiB outside PyTorch)"),
        new("--max-tp-per-node", false, "keep each tensor-parallel group inside one node"),
        new("--top", true, "how many of the best configs to print (default 10)"),
        new("--pareto-min-throughput", true, "Pareto front within this fraction of the best throughput (default 0.5; 0 = the whole front)"),
        new("--threads", true, "worker threads (default: every core)"),
        new("--out", true, "folder for the CSV and plots (default runs/search)"),
        new("--json", false, "print the top K as JSON"),
        new("--help", false, "this help"),
        // The implementation every configuration runs on: precision, kernels, overlaps, the launch environment.
        .. RunDescriptionFlags.ImplementationFlags,
    ];

    public static SearchInput? Read(CommandLine cl, ModelSpec model, ClusterSpec cluster)
    {
        int? gbs = cl.Int("--global-batch-size");
        if (gbs is null && cl.String("--global-batch-size") is null)
            cl.Errors.Add("--global-batch-size is required: the search keeps the global batch fixed.");
        else if (gbs < 1)
            cl.Errors.Add($"--global-batch-size is {gbs}; it must be at least 1.");
        if (cl.Switch("--sequence-parallel") && cl.Switch("--no-sequence-parallel"))
            cl.Errors.Add("--sequence-parallel and --no-sequence-parallel contradict each other; pass at most one.");
        if (cl.Switch("--no-offload") && cl.String("--offload-ratio") is not null)
            cl.Errors.Add("--no-offload and --offload-ratio contradict each other; pass at most one.");
        if (cl.String(RunDescriptionFlags.HierarchicalSizes.Name) is string sizes)
            cl.Errors.Add($"{RunDescriptionFlags.HierarchicalSizes.Name} {sizes} does not narrow the search: it tries a2a+p2p with every all-to-all size that divides c and the heads; narrow with --cp-comm-type and --context-parallel-size.");
        if (cl.Switch("--use-distributed-optimizer") && cl.String("--zero-stage") is not null)
            cl.Errors.Add("--use-distributed-optimizer (ZeRO stage 1) and --zero-stage contradict each other; pass at most one.");

        var constraints = new SearchConstraints
        {
            TensorParallel = Ints(cl, "--tensor-model-parallel-size"),
            PipelineParallel = Ints(cl, "--pipeline-model-parallel-size"),
            ContextParallel = Ints(cl, "--context-parallel-size"),
            ContextParallelComm = ContextParallelComms(cl),
            DataParallel = Ints(cl, "--data-parallel-size"),
            MicroBatch = Ints(cl, "--micro-batch-size"),
            LayersPerVirtualStage = Ints(cl, "--num-layers-per-virtual-pipeline-stage", allowNone: true),
            LayersInFirstPipelineStage = Ints(cl, "--decoder-first-pipeline-num-layers", allowNone: true),
            LayersInLastPipelineStage = Ints(cl, "--decoder-last-pipeline-num-layers", allowNone: true),
            AccountForEmbeddingInPipelineSplit = cl.Switch("--account-for-embedding-in-pipeline-split"),
            AccountForLossInPipelineSplit = cl.Switch("--account-for-loss-in-pipeline-split"),
            SequenceParallel = cl.Switch("--sequence-parallel") ? [true] : cl.Switch("--no-sequence-parallel") ? [false] : null,
            Recompute = RecomputeKinds(cl),
            RecomputeMethod = List<RecomputeMethod>(cl, "--recompute-method",
                w => Enum.TryParse<RecomputeMethod>(w, ignoreCase: true, out var m) ? m : null, "uniform or block"),
            RecomputeNumLayers = Ints(cl, "--recompute-num-layers"),
            OffloadRatios = cl.Switch("--no-offload") ? [0.0] : Doubles(cl, "--offload-ratio") ?? Doubles(cl, "--kaimm-offload-activation-ratio"),
            OffloadStep = cl.Double("--offload-step") ?? 0.05,
            ZeroStage = cl.Switch(RunDescriptionFlags.UseMegatronFsdp) ? ShardingStrategies(cl)
                : cl.Switch("--use-distributed-optimizer") ? [1] : Ints(cl, "--zero-stage"),
            SyncFactors = Doubles(cl, "--sync-factor") ?? [1.0],
            MemoryLimitBytes = Bytes(cl, "--memory-limit"),
            TensorParallelWithinNode = cl.Switch("--max-tp-per-node"),
            Implementation = RunDescriptionFlags.ReadImplementation(cl, new RunDescription()),
        };
        cl.Errors.AddRange(constraints.Validate());
        // One attention backend for every configuration (auto resolved per GPU and precision as Transformer Engine does).
        if (AttentionKernels.Unavailable(constraints.Implementation, cluster.Gpu) is string attention) cl.Errors.Add(attention);
        // Sizes none of which divides the world size leave nothing to search: one sentence, not an empty space's diagnosis.
        foreach (var (flag, only) in new[] { ("--tensor-model-parallel-size", constraints.TensorParallel), ("--pipeline-model-parallel-size", constraints.PipelineParallel),
                     ("--context-parallel-size", constraints.ContextParallel), ("--data-parallel-size", constraints.DataParallel) })
            if (only is { Count: > 0 } && only.All(n => n >= 1 && cluster.WorldSize % n != 0))
                cl.Errors.Add($"{flag} {string.Join(",", only)}: {(only.Count == 1 ? "it does" : "none of them does")} not divide the {cluster.WorldSize} GPUs.");
        int top = cl.Int("--top") ?? 10;
        if (top < 1) cl.Errors.Add($"--top is {top}; it must be at least 1.");
        int threads = cl.Int("--threads") ?? Environment.ProcessorCount;
        if (threads < 1) cl.Errors.Add($"--threads is {threads}; it must be at least 1.");
        double pareto = cl.Double("--pareto-min-throughput") ?? new SearchOptions().ParetoMinThroughputFraction;
        if (pareto is < 0 or > 1) cl.Errors.Add($"--pareto-min-throughput {pareto} is outside [0, 1].");
        if (cl.Errors.Count > 0 || gbs is null) return null;
        return new SearchInput(
            new SearchSpace(model, cluster, gbs.Value, constraints),
            new SearchOptions { TopK = top, Threads = threads, ParetoMinThroughputFraction = pareto },
            cl.Switch("--json"),
            cl.String("--out") ?? Path.Combine("runs", "search"));
    }

    /// <summary>
    /// The recomputation constraint from `--recompute` or, as pasted from a Megatron launch line,
    /// `--recompute-granularity full|selective` (or `--recompute-activations`, which means selective).
    /// Megatron rejects `--recompute-method` without full granularity, and so does this when no full recomputation is left.
    /// </summary>
    private static IReadOnlyList<RecomputeKind>? RecomputeKinds(CommandLine cl)
    {
        var kinds = List<RecomputeKind>(cl, "--recompute", w => RecomputeChoices.TryParse(w, out var k) ? k : null,
            $"one of {string.Join(", ", RecomputeChoices.AllNames)}");
        var granularity = List<RecomputeKind>(cl, "--recompute-granularity", w => w.ToLowerInvariant() switch
        {
            "full" => RecomputeKind.Full,
            "selective" => RecomputeKind.Selective,
            _ => null,
        }, "full or selective");
        if (granularity is null && cl.Switch("--recompute-activations")) granularity = [RecomputeKind.Selective];
        // Megatron-Kwai's switches, as pasted from its launch line: only that recomputation (with selective if also given).
        bool norm = cl.Switch("--kaimm-recompute-norm"), activation = cl.Switch("--kaimm-recompute-mlp-activation-func");
        if (norm || activation)
        {
            bool selective = granularity is [RecomputeKind.Selective];
            if (granularity is not null && !selective)
                cl.Errors.Add("Megatron-Kwai's --kaimm-recompute-* switches cannot be combined with full recomputation.");
            var kwai = norm && activation ? RecomputeKind.Kwai : norm ? RecomputeKind.KwaiNorm : RecomputeKind.KwaiActivation;
            var kwaiSelective = norm && activation ? RecomputeKind.SelectiveKwai : norm ? RecomputeKind.SelectiveKwaiNorm : RecomputeKind.SelectiveKwaiActivation;
            granularity = [selective ? kwaiSelective : kwai];
        }
        if (kinds is not null && granularity is not null)
            cl.Errors.Add("--recompute and --recompute-granularity (or --recompute-activations) both narrow recomputation; pass one of them.");
        var chosen = kinds ?? granularity;
        if (chosen is not null && !chosen.Contains(RecomputeKind.Full))
            foreach (var flag in new[] { "--recompute-method", "--recompute-num-layers" })
                if (cl.String(flag) is not null)
                    cl.Errors.Add($"{flag} applies only to full recomputation, which the recompute constraint excludes.");
        return chosen;
    }

    /// <summary>--cp-comm-type as a list of Megatron's words; each wrong one is reported as the codec reports it.</summary>
    private static IReadOnlyList<ContextParallelCommType>? ContextParallelComms(CommandLine cl)
    {
        var text = cl.String("--cp-comm-type");
        if (text is null) return null;
        var comms = text.Split(',', StringSplitOptions.TrimEntries).Select(w => RunDescriptionFlags.ParseContextParallelComm(w, cl.Errors));
        return comms.OfType<ContextParallelCommType>().Distinct().ToArray();
    }

    private static IReadOnlyList<T>? List<T>(CommandLine cl, string flag, Func<string, T?> parse, string valid) where T : struct
    {
        var text = cl.String(flag);
        if (text is null) return null;
        var values = new List<T>();
        foreach (var word in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (parse(word) is T v) values.Add(v);
            else cl.Errors.Add($"{flag} value '{word}' is not valid; expected {valid}, separated by commas.");
        }
        return values;
    }

    /// <summary>Megatron-FSDP's strategies to search, as their stages (null: all); --zero-stage is DeepSpeed's and does not go with them.</summary>
    private static IReadOnlyList<int>? ShardingStrategies(CommandLine cl)
    {
        if (cl.String("--zero-stage") is string z)
            cl.Errors.Add($"--zero-stage {z} is DeepSpeed's sharding; under {RunDescriptionFlags.UseMegatronFsdp} narrow with {RunDescriptionFlags.ShardingStrategy}.");
        return List<int>(cl, RunDescriptionFlags.ShardingStrategy, w => Array.IndexOf(MegatronFsdp.Strategies, w.ToLowerInvariant()) is int i and >= 0 ? i : null,
            string.Join(", ", MegatronFsdp.Strategies));
    }

    private static IReadOnlyList<int>? Ints(CommandLine cl, string flag, bool allowNone = false) =>
        List<int>(cl, flag, w => allowNone && w.Equals("none", StringComparison.OrdinalIgnoreCase) ? 0
            : int.TryParse(w, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : null,
            allowNone ? "integers or 'none'" : "integers");

    private static IReadOnlyList<double>? Doubles(CommandLine cl, string flag) =>
        List<double>(cl, flag, w => double.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) ? v : null,
            "numbers");

    [GeneratedRegex(@"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", RegexOptions.IgnoreCase)]
    private static partial Regex SizePattern();

    /// <summary>A size such as 70GiB, 80GB, 75000MiB or a plain byte count.</summary>
    public static long? ParseBytes(string text)
    {
        var m = SizePattern().Match(text);
        if (!m.Success) return null;
        double n = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        double unit = m.Groups[2].Value.ToUpperInvariant() switch
        {
            "KB" => 1e3, "MB" => 1e6, "GB" => 1e9, "TB" => 1e12,
            "KIB" => 1L << 10, "MIB" => 1L << 20, "GIB" => 1L << 30, "TIB" => 1L << 40,
            _ => 1,
        };
        return (long)(n * unit);
    }

    private static long? Bytes(CommandLine cl, string flag)
    {
        var text = cl.String(flag);
        if (text is null) return null;
        var bytes = ParseBytes(text);
        if (bytes is null) cl.Errors.Add($"{flag} '{text}' is not a size; write it like 70GiB, 80GB or 75000MiB.");
        return bytes;
    }
}
