using System.Text.Json;
using Harness.Executor.Transformer;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Executor.Training.Records;
using Harness.Reproduce;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// --attention-backend in the executor on the CPU: libtorch's switches really change (read back through its own getters),
/// the record says which kernel ran (libtorch's CPU order is its flash kernel, then math; there is no cuDNN on a CPU), and
/// what ran is what trained. Runs with the other training tests: libtorch's switches are the process's.
/// </summary>
[Collection("training")]
public class AttentionKernelTests
{
    private static readonly ModelSpec Small = DefaultRun.Model with { SeqLength = 32 };
    private static readonly ModelSpec WithDropout = Small with { AttentionDropout = 0.1 };

    [Fact]
    public void TheSwitchesAreLibtorchsOwn()
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        var mathOnly = new SdpBackends.Allowed(Flash: false, MemEfficient: false, Math: true, CuDnn: false);
        SdpBackends.Set(mathOnly);
        Assert.Equal(mathOnly, SdpBackends.Current);
        SdpBackends.Set(SdpBackends.Allowed.All);
        Assert.Equal(SdpBackends.Allowed.All, SdpBackends.Current);
    }

    [Theory]
    [InlineData(AttentionBackend.Flash, AttentionBackend.Flash, false)]
    [InlineData(AttentionBackend.Unfused, AttentionBackend.Unfused, false)]
    [InlineData(AttentionBackend.Local, AttentionBackend.Local, false)]
    [InlineData(AttentionBackend.Auto, AttentionBackend.Flash, false)] // libtorch's CPU order: its flash kernel first
    [InlineData(AttentionBackend.Fused, AttentionBackend.Unfused, true)]
    public void OnTheCpuTheRecordSaysWhichKernelRan(AttentionBackend asked, AttentionBackend ran, bool noted)
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        var (backend, notes) = AttentionKernel.Select(Small, new RunDescription(AttentionBackend: asked), CPU, ScalarType.Float32);
        Assert.Equal(ran, backend);
        Assert.Equal(noted, notes.Count == 1);
        if (noted) Assert.StartsWith("cuDNN's fused attention is a CUDA kernel", notes[0]);
    }

    [Fact]
    public void CpuAttentionWithDropoutIsTheExecutorsOwnUnfusedAttention()
    {
        TorchRuntime.Initialize(ExecutionDevice.Cpu);
        var (backend, notes) = AttentionKernel.Select(WithDropout, new RunDescription(), CPU, ScalarType.Float32);
        Assert.Equal(AttentionBackend.Unfused, backend);
        Assert.StartsWith("on the CPU, attention with dropout runs as the executor's own", Assert.Single(notes));
    }

    /// <summary>
    /// With attention dropout both backends run the executor's own matmuls, softmax and dropout on the CPU: the losses are the
    /// same bits and both records say unfused, the flash run with a note. Without dropout flash runs libtorch's CPU flash
    /// kernel and unfused its math kernel: the records differ, the losses agree to float32 rounding.
    /// </summary>
    [Fact]
    public void FlashAndUnfusedTrainAlikeAndTheRecordsSayWhatRan()
    {
        (IReadOnlyList<IterationRecord> Rows, RunDescription Ran, IReadOnlyList<string> Notes) Train(ModelSpec model, AttentionBackend backend)
        {
            string dir = Path.Combine(TestTemp.Root, $"harness-attention-{Guid.NewGuid():N}");
            try
            {
                var settings = new RunSettings(TrainIters: 3, Seed: 7, DataPath: DataBlend.Single(DefaultRun.DataPath), LogInterval: 1);
                var rows = new TrainingRun(model, new RunDescription(MicroBatch: 2, GlobalBatch: 2, AttentionBackend: backend), settings, dir, _ => { })
                    .RunSingleDevice();
                using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
                var notes = summary.RootElement.GetProperty("Notes").EnumerateArray().Select(n => n.GetString()!).ToList();
                return (rows, SummaryRun.Of(summary.RootElement).Description, notes);
            }
            finally
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            }
        }

        var flash = Train(WithDropout, AttentionBackend.Flash);
        var unfused = Train(WithDropout, AttentionBackend.Unfused);
        Assert.Equal(unfused.Rows.Select(r => r.Loss), flash.Rows.Select(r => r.Loss));
        Assert.Equal(AttentionBackend.Unfused, flash.Ran.AttentionBackend);
        Assert.Equal(AttentionBackend.Unfused, unfused.Ran.AttentionBackend);
        Assert.Contains(flash.Notes, n => n.StartsWith("on the CPU, attention with dropout runs as the executor's own"));
        Assert.DoesNotContain(unfused.Notes, n => n.Contains("attention"));

        var flashKernel = Train(Small, AttentionBackend.Flash);
        var mathKernel = Train(Small, AttentionBackend.Unfused);
        Assert.Equal(AttentionBackend.Flash, flashKernel.Ran.AttentionBackend);
        Assert.Equal(AttentionBackend.Unfused, mathKernel.Ran.AttentionBackend);
        foreach (var (a, b) in flashKernel.Rows.Zip(mathKernel.Rows))
            Assert.Equal(b.Loss, a.Loss, 1e-4);
    }
}
