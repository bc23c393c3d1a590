using Harness.Megatron;
using Harness.Cli.Arguments;
using Harness.Cli.Output;
using Harness.Simulator;
using Harness.Simulator.Costs;
using Harness.Simulator.Specs;

namespace Harness.Cli.Commands;

/// <summary>`harness simulate`: estimate one training iteration of a Megatron-style configuration.</summary>
public static class SimulateCommand
{
    /// <summary>What `harness simulate` with no configuration flags runs: Llama-7B on one node of 8 H100s.</summary>
    public static readonly string[] DefaultConfiguration =
    {
        "--model", "llama-7b", "--gpu", "h100-sxm", "--gpus", "8", "--tensor-model-parallel-size", "2",
        "--sequence-parallel", "--use-distributed-optimizer", "--bf16", "--micro-batch-size", "1", "--global-batch-size", "128",
    };

    private static readonly Flag[] OwnFlags =
    {
        new("--json", false, "print one JSON object instead of tables"),
        new("--attention-flops", true, "how MFU counts attention: causal (default, Megatron-Kwai) or full (Narayanan et al.)"),
        new("--print-model-json", false, "print the model as a JSON file for --model FILE, and stop"),
        new("--print-cluster-json", false, "print the cluster as a JSON file for --cluster FILE, and stop"),
        new("--help", false, "this help"),
    };

    public static int Run(string[] args)
    {
        var flags = SimulationFlags.Flags.Concat(OwnFlags).ToArray();
        var cl = CommandLine.Parse(args, flags, FlagReader.Estimate);
        if (cl.Switch("--help")) { PrintHelp(flags); return 0; }
        bool usedDefault = !cl.HasAny(SimulationFlags.Flags);
        if (usedDefault)
        {
            var merged = CommandLine.Parse(DefaultConfiguration.Concat(args).ToArray(), flags, FlagReader.Estimate);
            cl = merged;
        }
        var counting = cl.Choice("--attention-flops", "causal", "full") == "full" ? AttentionFlopCounting.Full : AttentionFlopCounting.Causal;
        var input = SimulationFlags.Read(cl);
        if (input is null)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness simulate: {e}");
            return 2;
        }
        if (cl.Switch("--print-model-json") || cl.Switch("--print-cluster-json"))
        {
            if (cl.Switch("--print-model-json")) Console.WriteLine(SpecJson.Write(input.Model));
            if (cl.Switch("--print-cluster-json")) Console.WriteLine(SpecJson.Write(input.Cluster));
            return 0;
        }
        var estimate = Estimator.Estimate(input.Model, input.Cluster, input.Config, counting);
        if (cl.Switch("--json"))
            Console.WriteLine(EstimateJson.Write(input, estimate, cl.Ignored));
        else
        {
            if (usedDefault) Console.WriteLine($"No configuration given; simulating the default: {string.Join(' ', DefaultConfiguration)}");
            EstimateReport.Print(input, estimate, cl.Ignored);
        }
        return 0;
    }

    private static void PrintHelp(IEnumerable<Flag> flags)
    {
        Console.WriteLine("usage: harness simulate [Megatron-LM model and parallel flags] [--json]");
        Console.WriteLine("Estimates one training iteration: step time, tokens/s/GPU, MFU, peak memory per GPU, with breakdowns.");
        Console.WriteLine("Megatron-LM's settings (logging, checkpoints, data, the learning-rate schedule) are accepted and listed; its flags that change the estimate but are not modelled, and unknown flags, are refused.");
        Flag.PrintHelp(flags, 44);
    }
}
