using System.Text.Json;
using Harness.Cli.Commands;

namespace Harness.Tests.Search;

/// <summary>
/// Search's configurations run as printed: small searches on 4 GPUs of a scaled-down Llama, and every one of their top
/// configurations run for one iteration on 4 CPU ranks from its printed `harness run` command (the device swapped for the
/// CPU, mock tokens and one iteration added).
/// </summary>
[Collection("Console")]
public class SearchWinnersRunTests : IDisposable
{
    private readonly string _out = Path.Combine(TestTemp.Root, "harness-winners-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_out)) Directory.Delete(_out, recursive: true);
    }

    private const string Model =
        "--num-layers 4 --hidden-size 64 --ffn-hidden-size 128 --num-attention-heads 4 --group-query-attention --num-query-groups 2 " +
        "--swiglu --normalization RMSNorm --position-embedding-type rope --untie-embeddings-and-output-weights --disable-bias-linear " +
        "--vocab-size 256 --seq-length 64 --hidden-dropout 0 --attention-dropout 0";

    /// <summary>The top configurations' run commands of a search over <paramref name="constraints"/>.</summary>
    private List<string> RunCommands(string constraints)
    {
        var args = $"{Model} --gpu h100-sxm --gpus 4 --global-batch-size 8 {constraints} --top 4 --json --out {_out}/search"
            .Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var (code, output, err) = ConsoleCapture.Run(SearchCommand.Run, args);
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        return doc.RootElement.GetProperty("top").EnumerateArray().Select(e => e.GetProperty("run_command").GetString()!).ToList();
    }

    [Theory]
    [InlineData("")]
    [InlineData("--tensor-model-parallel-size 2 --context-parallel-size 2 --cp-comm-type p2p,a2a,a2a+p2p")]
    [InlineData("--pipeline-model-parallel-size 2,4")]
    [InlineData("--zero-stage 2,3 --recompute none,kwai,full")]
    [InlineData("--use-megatron-fsdp --pipeline-model-parallel-size 2 --data-parallel-sharding-strategy optim_grads,optim_grads_params")]
    public void EveryTopConfigurationRunsFromItsPrintedCommand(string constraints)
    {
        var commands = RunCommands(constraints);
        Assert.NotEmpty(commands);
        int k = 0;
        foreach (var command in commands)
        {
            var words = command.Split(' ').ToList();
            Assert.Equal(["harness", "run"], words.Take(2));
            int device = words.IndexOf("--device");
            Assert.Equal("cuda", words[device + 1]);
            words[device + 1] = "cpu";
            string dir = Path.Combine(_out, $"run-{k++}");
            var (code, _, err) = ConsoleCapture.Run(RunCommand.Run, [.. words.Skip(2), "--mock-data", "--train-iters", "1", "--out", dir]);
            Assert.True(code == 0, $"{command}: {err}");
            Assert.True(File.Exists(Path.Combine(dir, "summary.json")), command);
        }
    }
}
