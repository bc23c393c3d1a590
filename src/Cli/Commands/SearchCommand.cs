using Harness.Megatron;
using Harness.Cli.Arguments;
using Harness.Cli.Output;
using Harness.Search;
using Spectre.Console;

namespace Harness.Cli.Commands;

/// <summary>`harness search`: the fastest configurations that fit, exhaustively over the stated space.</summary>
public static class SearchCommand
{
    private static Flag[] ModelAndCluster => ModelFlags.Flags.Concat(ClusterFlags.Flags).ToArray();

    public static int Run(string[] args)
    {
        var flags = ModelAndCluster.Concat(SearchArguments.Flags).ToArray();
        var cl = CommandLine.Parse(args, flags, FlagReader.Estimate);
        if (cl.Switch("--help")) { PrintHelp(flags); return 0; }
        var model = ModelFlags.Read(cl);
        var cluster = ClusterFlags.Read(cl);
        var input = model is null || cluster is null ? null : SearchArguments.Read(cl, model, cluster);
        if (input is null)
        {
            foreach (var e in cl.Errors) Console.Error.WriteLine($"harness search: {e}");
            return 2;
        }
        if (OutputFolder.Create(input.OutputDirectory) is string outError)
        {
            Console.Error.WriteLine($"harness search: {outError}");
            return 2;
        }
        if (cl.Ignored.Count > 0) Console.Error.WriteLine($"Megatron-LM settings accepted (they do not change the estimates): {string.Join(' ', cl.Ignored)}");

        var result = RunWithProgress(input);
        if (result.Counts.Enumerated == 0)
        {
            SearchReport.PrintEmptySpace(input.Space);
            return 2;
        }
        string csv = Path.Combine(input.OutputDirectory, "evaluated.csv");
        SearchCsv.Write(csv, result);
        if (result.Best is not Evaluated best)
        {
            SearchReport.PrintNothingFits(result);
            Console.Error.WriteLine($"  every evaluated configuration: {csv}");
            return 2;
        }
        var plots = SearchPlots.Write(input.OutputDirectory, result);
        if (input.Json)
        {
            Console.WriteLine(SearchJson.Write(result, cl.Ignored, args));
            return 0;
        }
        SearchReport.PrintTop(result);
        SearchReport.PrintCounts(result);
        Terminal.Out.MarkupLine("Simulate the winner:");
        Console.WriteLine("  " + ConfigurationCommands.Simulate(args, best.Config));
        Terminal.Out.MarkupLine("Run the winner:");
        Console.WriteLine("  " + ConfigurationCommands.Run(args, input.Space.Cluster, best.Config));
        Terminal.Out.MarkupLine($"Every evaluated configuration: {Markup.Escape(csv)}; plots: {Markup.Escape(string.Join(", ", plots))}");
        return 0;
    }

    private static SearchResult RunWithProgress(SearchInput input)
    {
        var progress = new SearchProgress();
        var search = Task.Run(() => new Searcher(EstimatorCostModel.Instance, input.Options).Run(input.Space, progress));
        // A progress bar only for searches longer than a second, and only on a terminal.
        if (!search.Wait(TimeSpan.FromSeconds(1)) && !input.Json && !Console.IsOutputRedirected)
            Terminal.Out.Progress().Start(ctx =>
            {
                var bar = ctx.AddTask("searching layouts");
                while (!search.Wait(TimeSpan.FromMilliseconds(100)))
                {
                    bar.MaxValue = Math.Max(1, progress.Total);
                    bar.Value = progress.Done;
                }
                bar.Value = bar.MaxValue;
            });
        return search.GetAwaiter().GetResult();
    }

    private static void PrintHelp(IEnumerable<Flag> flags)
    {
        Console.WriteLine("usage: harness search --model PRESET --gpu PRESET --gpus N --global-batch-size B [constraints] [--top K] [--json]");
        Console.WriteLine("Finds the fastest configurations that fit, over every valid data/tensor/pipeline/context-parallel layout,");
        Console.WriteLine("interleaving, sequence parallelism, micro-batch, recomputation, offload ratio, ZeRO stage and sync factor p,");
        Console.WriteLine("pruning by proven bounds (exhaustive over the stated space). Lists are comma-separated.");
        Flag.PrintHelp(flags, 44);
    }
}
