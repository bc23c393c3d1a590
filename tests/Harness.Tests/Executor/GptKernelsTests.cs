using TorchSharp;
using System.Diagnostics;
using Harness.Executor.Fused;
using Harness.Executor.Native;
using Harness.Executor.Training;
using Harness.Simulator.Specs;
using static TorchSharp.torch;

namespace Harness.Tests.Executor;

/// <summary>
/// The GPT path's fused kernels (Fused.GptKernels) and the residual add + RMSNorm of the Llama path's without a GPU: the
/// kernels' arithmetic and indexing run on the CPU
/// (KernelEmulation/: CUDA's threads, barriers and shuffles emulated, built by the machine's C++ compiler), the launch
/// shapes, the embedding backward's libtorch half, which fusions a run resolves and records, and that a module that does not
/// load leaves the other kernels on. `harness kernel-check` checks the same kernels on a GPU.
/// </summary>
[Collection("training")]
public class GptKernelsTests
{
    private static string Repository => Path.GetFullPath(Path.Combine(ExperimentFileTests.ExperimentsDir, ".."));

    [Fact]
    public void TheKernelsComputeTheNormsOfTheSumAndTheEmbeddingsOnTheCpuEmulation()
    {
        string? compiler = new[] { "c++", "g++", "clang++" }
            .Select(c => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, c)).FirstOrDefault(File.Exists))
            .FirstOrDefault(c => c is not null);
        Assert.True(compiler is not null, "no C++ compiler (c++, g++ or clang++) on PATH to build the kernels' CPU emulation");
        string binary = Path.Combine(TestTemp.Root, $"gpt-kernels-{Guid.NewGuid():N}");
        try
        {
            var (code, output) = Execute(compiler!, "-std=c++20", "-O1", "-pthread", "-w", $"-I{Path.Combine(Repository, "src/Executor/Fused")}",
                Path.Combine(Repository, "tests/Harness.Tests/Executor/KernelEmulation/kernels_test.cpp"), "-o", binary);
            Assert.True(code == 0, output);
            (code, output) = Execute(binary);
            Assert.True(code == 0, output);
            // Every kernel was checked: Philox's known answers; 6 add + LayerNorm and 6 add + RMSNorm shapes of 5 checks each,
            // and 3 of each with dropout of 7 (the dropped r's gradient and the mask's two outcomes besides); 6 embeddings of 1.
            Assert.Equal(1 + 2 * (6 * 5 + 3 * 7) + 6, output.Split('\n').Count(l => l.StartsWith("PASS ", StringComparison.Ordinal)));
            Assert.EndsWith("all passed", output.Trim());
        }
        finally
        {
            File.Delete(binary);
        }
    }

    private static (int Code, string Output) Execute(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var error = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + error.Result);
    }

    [Fact]
    public void RowKernelsTakeAWarpPer32AccessesAndTheWeightGradientsSumRowsInParts()
    {
        // gpt2-large's h 1280 in 16-byte accesses: 160 of them, 5 warps; an unaligned row of 1283 one element at a time: 256
        // threads looping; a row of 16: one warp.
        Assert.Equal(160, AddNormKernels.RowThreads(1280, 8));
        Assert.Equal(256, AddNormKernels.RowThreads(1283, 1));
        Assert.Equal(32, AddNormKernels.RowThreads(16, 8));
        // 32 x 1024 rows in 256 parts of 128; fewer rows than parts: one row each; 1000 rows: 250 parts of 4.
        Assert.Equal((128L, 256L), AddNormKernels.WeightGradientSplit(32 * 1024));
        Assert.Equal((1L, 77L), AddNormKernels.WeightGradientSplit(77));
        Assert.Equal((4L, 250L), AddNormKernels.WeightGradientSplit(1000));
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 2)]
    public void TheEmbeddingGradientsAreLibtorchsEmbeddingBackward(int rank, int shards)
    {
        // Against autograd through the unfused path (ShardedTensorParallel.EmbeddingLookup's masked gather, then the
        // positions of a context-parallel rank, rows 0-3 and 12-15 of 16): the same index-adds, in float32 the same bits.
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        using var generator = new Generator(31);
        const long vocab = 64, h = 8, batch = 3, seq = 8;
        long rows = vocab / shards, start = rank * rows;
        var word = randn(new[] { rows, h }, generator: generator).requires_grad_();
        var position = randn(new[] { 16L, h }, generator: generator).requires_grad_();
        var ids = randint(0, vocab, new[] { batch, seq }, generator: generator);
        var positionIds = cat(new[] { HeldScalars.Positions(0, 4), HeldScalars.Positions(12, 16) });
        var dy = randn(new[] { batch, seq, h }, generator: generator);

        using Scalar first = start.ToScalar(), end = (start + rows).ToScalar();
        var outside = ids.lt(first).logical_or_(ids.ge(end));
        var local = ids.sub(first).FilledWhere(outside, 0);
        var words = word.index_select(0, local.reshape(-1)).reshape(batch, seq, h).FilledWhere(outside.unsqueeze(-1), 0);
        words.Plus(position.index_select(0, positionIds)).backward(new[] { dy });

        var (dword, dposition) = EmbeddingFunction.Gradients(ids.reshape(-1), dy, start, rows, positionIds, 16);
        Assert.Equal(new[] { rows, h }, dword.shape);
        Assert.Equal(word.grad!.data<float>().ToArray(), dword.contiguous().data<float>().ToArray());
        Assert.Equal(position.grad!.data<float>().ToArray(), dposition!.data<float>().ToArray());
        // The shard's case has other ranks' ids, whose gradients went to the spare row.
        Assert.Equal(shards > 1, outside.any().item<bool>());
        Assert.Null(EmbeddingFunction.Gradients(ids.reshape(-1), dy, start, rows, null, 0).Position);
    }

    [Fact]
    public void OnTheCpuTheGptKernelsAreAskedForAndLibtorchRuns()
    {
        TorchRuntime.Initialize();
        var attention = (AttentionBackend.Flash, (IReadOnlyList<string>)[]);
        // A CPU needs no probe: the kernels' call sites run libtorch's operators for CPU tensors.
        Assert.True(Fusions.Resolve(true, true, false, CPU, ScalarType.BFloat16, attention, gptPath: true).GptKernels);
        Assert.False(Fusions.Resolve(true, false, false, CPU, ScalarType.BFloat16, attention, gptPath: true).GptKernels);
        // They need the other kernels (--no-fused-kernels turns both off), and neither runs under fp16.
        Assert.False(Fusions.Resolve(false, true, false, CPU, ScalarType.BFloat16, attention, gptPath: true).GptKernels);
        Assert.False(Fusions.Resolve(true, true, false, CPU, ScalarType.Float16, attention, gptPath: true).GptKernels);
        Assert.False(FusedKernels.Applies(ones(2, dtype: ScalarType.BFloat16)));
    }

    [Fact]
    public void WithoutAGpuTheGptModuleSaysWhy()
    {
        TorchRuntime.Initialize();
        if (File.Exists("/dev/nvidiactl")) return; // a GPU machine: the kernels may well load there
        Assert.Matches("libcuda|NVRTC|driver", GptKernels.Probe(0));
        // Asked for on a GPU that cannot load them: the other kernels' probe fails first and both are off, with one note.
        var resolved = Fusions.Resolve(true, true, false, new Device(TorchSharp.DeviceType.CUDA, 0), ScalarType.BFloat16, (AttentionBackend.Flash, []), gptPath: true);
        Assert.False(resolved.Kernels || resolved.GptKernels);
        Assert.StartsWith("fused kernels off, libtorch's operators run instead", Assert.Single(resolved.Notes));
    }

    [Fact]
    public void TheRecordSaysWhetherTheGptKernelsRan()
    {
        var d = new RunDescription(Precision: Precision.Bf16, MicroBatch: 1, GlobalBatch: 1);
        var note = "the GPT path's fused kernels (residual add + LayerNorm, embedding + positions) off, libtorch's operators run instead: no NVRTC.";
        // Their module failed where the others loaded: the record keeps the others and says the GPT path's did not run.
        var (failed, notes) = ExecutorSupport.AsRun(d, ExecutionDevice.Cuda, new Fusions(true, true, [note], AttentionBackend.Flash, GptKernels: false), null);
        Assert.True(failed.FusedKernels);
        Assert.False(failed.FusedGptKernels);
        Assert.Contains(note, notes);
        var (ran, _) = ExecutorSupport.AsRun(d, ExecutionDevice.Cuda, new Fusions(true, true, [], AttentionBackend.Flash, GptKernels: true), null);
        Assert.True(ran.FusedGptKernels);
        // Not asked for (--no-fused-gpt-kernels), on a CPU, or in fp32: recorded as not run.
        Assert.False(ExecutorSupport.AsRun(d with { FusedGptKernels = false }, ExecutionDevice.Cuda, new Fusions(true, true, [], AttentionBackend.Flash, true), null).AsRun.FusedGptKernels);
        Assert.False(ExecutorSupport.AsRun(d, ExecutionDevice.Cpu, new Fusions(true, false, [], AttentionBackend.Flash, true), null).AsRun.FusedGptKernels);
        var (fp32, fp32Notes) = ExecutorSupport.AsRun(d with { Precision = Precision.Fp32 }, ExecutionDevice.Cuda, new Fusions(true, true, [], AttentionBackend.Flash, true), null);
        Assert.False(fp32.FusedGptKernels);
        Assert.Contains(fp32Notes, n => n.StartsWith("the GPT path's fused kernels (residual add + LayerNorm, embedding + positions) are bf16 kernels"));
        // Under --kaimm-recompute-norm the residual adds and norms are libtorch's, and the run says so.
        var kwai = d with { TensorParallel = 2, SequenceParallel = true, Recompute = new RecomputeSpec(NormOutputs: true) };
        Assert.Contains(ExecutorSupport.AsRun(kwai, ExecutionDevice.Cuda, new Fusions(true, true, [], AttentionBackend.Flash, true), 1).Notes,
            n => n.StartsWith("under --kaimm-recompute-norm the norms run inside the linears"));
        // Under --no-norm-fusion (the legacy float32 norm) likewise; with the norm fused, neither note.
        Assert.Contains(ExecutorSupport.AsRun(d with { FusedNorm = false }, ExecutionDevice.Cuda, new Fusions(true, true, [], AttentionBackend.Flash, true), 1).Notes,
            n => n.StartsWith("under --no-norm-fusion the residual adds and norms are libtorch's operators"));
        Assert.DoesNotContain(ExecutorSupport.AsRun(d, ExecutionDevice.Cuda, new Fusions(true, true, [], AttentionBackend.Flash, true), 1).Notes,
            n => n.Contains("the residual adds and norms are libtorch's operators"));
    }
}
