using System.Text.Json;
using Harness.Cli.Commands;
using Harness.Executor.Transformer;
using Harness.Executor.Fused;
using Harness.Executor.Training;
using Harness.Megatron;
using Harness.Reproduce;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Parallel;

/// <summary>
/// The loop that makes one product: for every flag `harness run` accepts of the run description, a CPU run's summary.json,
/// read back by the code `harness validate` uses (<see cref="SummaryRun.Of"/>), holds the description `harness simulate`
/// builds from the same flags, as the executor ran it (<see cref="ExecutorSupport.AsRun"/>: its p2p, TP and CP exchanges
/// are not overlapped, and on CPU its fused kernels are libtorch's operators, each with a note in the record).
/// </summary>
[Collection("Console")]
public class RunRecordTests
{
    private static readonly string[] Model =
    [
        "--num-layers", "4", "--hidden-size", "32", "--ffn-hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "16",
        "--vocab-size", "101",
    ];

    [Theory]
    [InlineData(1, "")]
    [InlineData(1, "--recompute-granularity full --recompute-method block --recompute-num-layers 2 --no-gradient-accumulation-fusion --no-fused-kernels")]
    [InlineData(1, "--recompute-granularity full --recompute-num-layers 2 --micro-batch-size 2 --global-batch-size 4 --attention-backend flash --optimizer adam")]
    [InlineData(1, "--attention-backend unfused")]
    [InlineData(1, "--attention-backend fused")]
    [InlineData(1, "--attention-backend auto")]
    [InlineData(2, "--tensor-model-parallel-size 2 --sequence-parallel --recompute-granularity selective")]
    [InlineData(2, "--tensor-model-parallel-size 2 --sequence-parallel --recompute-granularity selective --kaimm-recompute-norm --swiglu --kaimm-recompute-mlp-activation-func")]
    [InlineData(2, "--tensor-model-parallel-size 2 --sync-factor 0.5")]
    [InlineData(4, "--pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1 --global-batch-size 4 --no-overlap-p2p-communication")]
    [InlineData(3, "--pipeline-model-parallel-size 3 --decoder-first-pipeline-num-layers 1 --decoder-last-pipeline-num-layers 1 --global-batch-size 3")]
    [InlineData(2, "--pipeline-model-parallel-size 2 --decoder-last-pipeline-num-layers 3")]
    [InlineData(2, "--pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1 --account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split --global-batch-size 2")]
    [InlineData(2, "--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather --ddp-bucket-size 1000")]
    [InlineData(2, "--context-parallel-size 2 --cp-comm-type allgather")]
    [InlineData(2, "--context-parallel-size 2 --cp-comm-type a2a")]
    [InlineData(4, "--context-parallel-size 4 --cp-comm-type a2a+p2p --hierarchical-context-parallel-sizes 2 2")]
    [InlineData(2, "--context-parallel-size 2 --cp-comm-type p2p --fp32 --transformer-impl transformer_engine")]
    public void ARunRecordsWhatSimulateReadsFromTheSameFlags(int ranks, string flags)
    {
        string[] description = flags.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var cl = CommandLine.Parse([.. Model, "--gpus", $"{ranks}", .. description], SimulationFlags.Flags, FlagReader.Estimate);
        var simulated = SimulationFlags.Read(cl);
        Assert.Empty(cl.Errors);

        string dir = Path.Combine(TestTemp.Root, $"harness-record-{Guid.NewGuid():N}");
        try
        {
            var (code, _, err) = ConsoleCapture.Run(RunCommand.Run,
                [.. Model, .. description, "--mock-data", "--train-iters", "2", "--nproc-per-node", $"{ranks}", "--out", dir]);
            Assert.True(code == 0, err);
            using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
            var ran = SummaryRun.Of(summary.RootElement);
            var d = simulated!.Config;
            var fusions = Fusions.Resolve(d.FusedKernels, d.FusedGptKernels, d.GradientAccumulationFusion, CPU, ExecutorSupport.ComputeDtype(d.Precision),
                AttentionKernel.Select(simulated.Model, d, CPU, ExecutorSupport.ComputeDtype(d.Precision)), GptKernels.Serves(simulated.Model));
            Assert.Equal(ExecutorSupport.AsRun(d, ExecutionDevice.Cpu, fusions, null).AsRun, ran.Description);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Megatron's --max-position-embeddings sizes the learned position table: 32 rows instead of the sequence's 16
    /// add 16 x h parameters, and the record's model says so (validate simulates the same table).</summary>
    [Fact]
    public void MaxPositionEmbeddingsSizesThePositionTable()
    {
        long Parameters(params string[] extra)
        {
            string dir = Path.Combine(TestTemp.Root, $"harness-record-{Guid.NewGuid():N}");
            try
            {
                var (code, _, err) = ConsoleCapture.Run(RunCommand.Run, [.. Model, .. extra, "--mock-data", "--train-iters", "1", "--out", dir]);
                Assert.True(code == 0, err);
                using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
                var ran = SummaryRun.Of(summary.RootElement);
                Assert.Equal(ran.Model.TotalParameters, summary.RootElement.GetProperty("Parameters").GetInt64());
                return ran.Model.TotalParameters;
            }
            finally
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            }
        }
        Assert.Equal(16 * 32, Parameters("--max-position-embeddings", "32") - Parameters());
    }

    /// <summary>Megatron's --rotary-base and --norm-epsilon reach the model a run trains: the record carries them, and the
    /// loss after a few steps moves with them (at initialization the attention is near uniform whatever the angles).</summary>
    [Fact]
    public void RotaryBaseAndNormEpsilonAreApplied()
    {
        string[] llama = [.. Model, "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--disable-bias-linear",
            "--untie-embeddings-and-output-weights", "--mock-data", "--train-iters", "4", "--lr", "0.01"];
        (double Loss, ModelSpec Model) Run(params string[] extra)
        {
            string dir = Path.Combine(TestTemp.Root, $"harness-record-{Guid.NewGuid():N}");
            try
            {
                var (code, _, err) = ConsoleCapture.Run(RunCommand.Run, [.. llama, .. extra, "--out", dir]);
                Assert.True(code == 0, err);
                using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
                return (summary.RootElement.GetProperty("FinalLoss").GetDouble(), SummaryRun.Of(summary.RootElement).Model);
            }
            finally
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            }
        }
        var plain = Run();
        var rotary = Run("--rotary-base", "500000");
        var epsilon = Run("--norm-epsilon", "0.5");
        Assert.Equal((10000.0, 1e-5), (plain.Model.RotaryBase, plain.Model.NormEpsilon));
        Assert.Equal(500000, rotary.Model.RotaryBase);
        Assert.Equal(0.5, epsilon.Model.NormEpsilon);
        Assert.NotEqual(plain.Loss, rotary.Loss);
        Assert.NotEqual(plain.Loss, epsilon.Loss);
    }
}
