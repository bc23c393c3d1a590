namespace Harness.Cli;

/// <summary>The subcommands of `harness`, by name. One line per command.</summary>
public static class CommandTable
{
    private static readonly (string Name, string Summary, Func<string[], int> Run)[] Commands =
    {
        ("simulate", "estimate step time, MFU and memory of a training configuration", Harness.Cli.Commands.SimulateCommand.Run),
        ("reproduce", "simulate published tables (experiments/) and compare with their numbers", Harness.Cli.Commands.ReproduceCommand.Run),
        ("validate", "real runs (harness run) beside the simulator's estimate of the same configuration", Harness.Cli.Commands.ValidateCommand.Run),
        ("run", "train on CPU or one GPU (TorchSharp); metrics.csv, summary.json, plots, checkpoints", Harness.Cli.Commands.RunCommand.Run),
        ("export", "a run's checkpoint (any layout) as a Hugging Face model folder: config.json, model.safetensors", Harness.Cli.Commands.ExportCommand.Run),
        ("preprocess", "text or JSON lines -> Megatron .bin/.idx with GPT-2 BPE", Harness.Cli.Commands.PreprocessCommand.Run),
        ("nccl-check", "check every NCCL call the executor uses on this machine's GPUs, and all-reduce bandwidth", Harness.Cli.Commands.NcclCheckCommand.Run),
        ("kernel-check", "check the executor's fused CUDA kernels against libtorch on this GPU, and time both", Harness.Cli.Commands.KernelCheckCommand.Run),
        ("calibrate", "measure this GPU's GEMM, attention and memory rates; write its simulator constants", Harness.Cli.Commands.CalibrateCommand.Run),
        ("search", "the fastest configurations that fit, exhaustively over a stated space", Harness.Cli.Commands.SearchCommand.Run),
        ("compare", "several runs side by side: final losses, the validation difference to the first, loss curves in one plot", Harness.Cli.Commands.CompareCommand.Run),
    };

    public static int Dispatch(string[] args)
    {
        if (args.Length > 0 && args[0] is "--version" or "-V")
        {
            var assembly = typeof(CommandTable).Assembly;
            Console.WriteLine($"harness {assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
                .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion ?? assembly.GetName().Version?.ToString()}");
            return 0;
        }
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            PrintUsage(Console.Out);
            return args.Length == 0 ? 2 : 0;
        }
        foreach (var (name, _, run) in Commands)
            if (name == args[0]) return run(args[1..]);
        var names = Commands.Select(c => c.Name).ToList();
        Console.Error.WriteLine(Harness.Megatron.Spelling.Closest(args[0], names) is string closest
            ? $"harness: unknown command '{args[0]}'; did you mean {closest}?"
            : $"harness: unknown command '{args[0]}'; valid: {string.Join(", ", names)}.");
        return 2;
    }

    private static void PrintUsage(TextWriter w)
    {
        w.WriteLine("usage: harness <command> [options]   (harness <command> --help for its options)");
        foreach (var (name, summary, _) in Commands) w.WriteLine($"  {name,-12} {summary}");
    }
}
