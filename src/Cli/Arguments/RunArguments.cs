using System.Globalization;
using Harness.Executor.Training;
using Harness.Simulator.Specs;

namespace Harness.Cli.Arguments;

/// <summary>
/// `harness run`'s flags, read into the three records a run is: the model, the <see cref="RunDescription"/> and the
/// <see cref="RunSettings"/>. Everything after <see cref="Read"/> uses only those. Defaults as `harness run` has always had
/// them (the tiny default model and its schedule without model flags; a cosine decay to lr/10; --cp-comm-type all_gather;
/// fp32 unless --bf16); Megatron's own defaults come with the flag codec that replaces this body.
/// </summary>
public static class RunArguments
{
    /// <summary>The flags read besides the model's (<see cref="ModelArguments.Flags"/>) and the parallel ones
    /// (<see cref="Commands.DistributedRun.Flags"/>).</summary>
    public static readonly Flag[] Flags =
    {
        new("--micro-batch-size", true, "samples per micro-batch (default 4 for the tiny model, else 1)"),
        new("--global-batch-size", true, "samples per iteration; a multiple of micro-batch x data-parallel size (default: that product)"),
        new("--train-iters", true, "iterations (default 150)"),
        new("--lr", true, "peak learning rate"), new("--min-lr", true, "final learning rate (default lr/10)"),
        new("--lr-decay-style", true, "constant, linear, cosine (default) or inverse-square-root"),
        new("--lr-warmup-iters", true, "linear warm-up iterations"),
        new("--lr-warmup-fraction", true, "linear warm-up over this fraction of the decay iterations (instead of --lr-warmup-iters)"),
        new("--lr-decay-iters", true, "decay length (default --train-iters)"),
        new("--weight-decay", true, "AdamW decay (default 0.01)"), new("--clip-grad", true, "gradient norm limit (default 1.0; 0 = off)"),
        new("--adam-beta1", true, "default 0.9"), new("--adam-beta2", true, "default 0.999"), new("--adam-eps", true, "default 1e-8"),
        new("--recompute-granularity", true, "full or selective (default: none)"),
        new("--recompute-method", true, "uniform (default) or block, with full recomputation"),
        new("--recompute-num-layers", true, "layers per recomputed group (uniform) or recomputed per model chunk (block); default 1"),
        new("--bf16", false, "bf16 weights and activations, fp32 master weights and gradients (GPU)"),
        new("--device", true, "cpu or cuda (default cpu)"),
        new("--libtorch", true, "folder of libtorch's .so files (default: the bundled CPU build, or python3's PyTorch)"),
        new("--gpu", true, $"GPU preset whose peak gives MFU ({string.Join(", ", GpuPresets.All.Keys)}; default h100-sxm)"),
        new("--data-path", true, "prefix of a Megatron .bin/.idx dataset (default: the shipped corpus)"),
        new("--mock-data", false, "synthetic tokens instead of a dataset"),
        new("--save", true, "checkpoint folder"), new("--load", true, "resume from this checkpoint folder"),
        new("--save-interval", true, "iterations between checkpoints (default: only at the end)"),
        new("--seed", true, "random seed (default 1234)"),
        new("--out", true, "folder for metrics.csv, summary.json and plots (default runs/<time>)"),
        new("--log-interval", true, "print progress every N iterations (default 1)"),
        new("--no-fused-kernels", false, "on a GPU, libtorch's operators instead of the harness's fused SwiGLU, cross-entropy and AdamW kernels"),
        new("--no-gradient-accumulation-fusion", false, "fold bf16 weight gradients after each micro-batch instead of accumulating them in the GEMM (GPU)"),
        new("--make-vocab-size-divisible-by", true, "pad the embedding and output tables to a multiple of this times t, as Megatron does (default 128)"),
        new("--profile", false, "open a CUDA profiler range (nsys --capture-range=cudaProfilerApi, ncu --profile-from-start off)"),
        new("--profile-step-start", true, "the range starts before iteration start + 1 (default 10)"),
        new("--profile-step-end", true, "and ends after iteration end (default 12)"),
    };

    /// <summary>
    /// The run the flags describe on <paramref name="launchedWorldSize"/> ranks (torchrun's or Slurm's WORLD_SIZE when a
    /// launcher started this process; else --nproc-per-node), or null with the reasons in <see cref="CommandLine.Errors"/>.
    /// </summary>
    public static (ModelSpec Model, RunDescription Description, RunSettings Settings)? Read(CommandLine cl, int? launchedWorldSize)
    {
        bool tiny = !cl.HasAny(ModelArguments.Flags);
        var model = tiny ? DefaultRun.Model : ModelArguments.Read(cl);
        if (model is null) return null;

        int nproc = cl.Int("--nproc-per-node") ?? 1, world = launchedWorldSize ?? nproc;
        int t = cl.Int("--tensor-model-parallel-size") ?? 1, p = cl.Int("--pipeline-model-parallel-size") ?? 1, c = cl.Int("--context-parallel-size") ?? 1;
        int divisor = Math.Max(1, t * p * c);
        if (world % divisor != 0) cl.Errors.Add($"--nproc-per-node {world} is not divisible by tensor {t} x pipeline {p} x context {c}.");
        int dp = Math.Max(1, world / divisor);
        int micro = cl.Int("--micro-batch-size") ?? (tiny ? DefaultRun.MicroBatchSize : 1);
        // A micro-batch below 1 is reported as such; the default global batch must not echo it as a second mistake.
        int global = cl.Int("--global-batch-size") ?? Math.Max(micro, 1) * dp;
        var description = new RunDescription(dp, t, p, cl.Int("--num-layers-per-virtual-pipeline-stage"), c, cl.Switch("--sequence-parallel"),
            micro, global, ParallelArguments.Recompute(cl),
            ZeroStage: cl.Switch("--use-distributed-optimizer") ? 1 : 0, SyncFactor: cl.Double("--sync-factor") ?? 1.0,
            Overlap: new OverlapSpec(GradientReduce: cl.Switch("--overlap-grad-reduce"), ParamGather: cl.Switch("--overlap-param-gather")),
            Precision: cl.Switch("--bf16") ? Precision.Bf16 : Precision.Fp32,
            GradientAccumulationFusion: !cl.Switch("--no-gradient-accumulation-fusion"),
            ContextParallelComm: cl.Choice("--cp-comm-type", "all_gather", "p2p") == "p2p" ? ContextParallelCommType.P2p : ContextParallelCommType.AllGather,
            FusedKernels: !cl.Switch("--no-fused-kernels"), DdpBucketSize: cl.Int("--ddp-bucket-size"));

        long iters = cl.Int("--train-iters") ?? DefaultRun.TrainIters;
        double lr = cl.Double("--lr") ?? (tiny ? DefaultRun.Lr : 1e-4);
        var schedule = new LearningRateSettings(lr, cl.Double("--min-lr") ?? (tiny ? DefaultRun.MinLr : lr / 10), DecayStyle(cl),
            cl.Int("--lr-warmup-iters") ?? (tiny ? DefaultRun.WarmupIters : 0), cl.Double("--lr-warmup-fraction"), cl.Int("--lr-decay-iters"));
        if (cl.String("--lr-warmup-iters") is not null && cl.String("--lr-warmup-fraction") is not null)
            cl.Errors.Add("pass one of --lr-warmup-iters and --lr-warmup-fraction.");
        var a = new AdamSettings();
        var adam = new AdamSettings(cl.Double("--adam-beta1") ?? a.Beta1, cl.Double("--adam-beta2") ?? a.Beta2,
            cl.Double("--adam-eps") ?? a.Epsilon, cl.Double("--weight-decay") ?? a.WeightDecay, cl.Double("--clip-grad") ?? a.ClipGrad);
        bool mock = cl.Switch("--mock-data");
        var settings = new RunSettings(iters, cl.Int("--seed") ?? 1234, schedule, adam,
            cl.String("--data-path") ?? (mock ? null : DefaultRun.DataPath), mock, cl.String("--save"), cl.String("--load"), cl.Int("--save-interval") ?? 0,
            cl.Int("--log-interval") ?? 1, cl.String("--out") ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)),
            Profile(cl), cl.Int("--make-vocab-size-divisible-by") ?? new RunSettings().MakeVocabSizeDivisibleBy,
            cl.Choice("--device", "cpu", "cuda") == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu, cl.String("--libtorch"),
            cl.String("--gpu") ?? new RunSettings().Gpu, nproc, cl.Int("--master-port"));
        return cl.Errors.Count > 0 ? null : (model, description, settings);
    }

    private static LearningRateDecayStyle DecayStyle(CommandLine cl) =>
        cl.Choice("--lr-decay-style", "constant", "linear", "cosine", "inverse-square-root") switch
        {
            "constant" => LearningRateDecayStyle.Constant,
            "linear" => LearningRateDecayStyle.Linear,
            "inverse-square-root" => LearningRateDecayStyle.InverseSquareRoot,
            _ => LearningRateDecayStyle.Cosine,
        };

    /// <summary>Megatron's --profile with its step range; the step flags alone are an error, as they would do nothing.</summary>
    private static ProfileRange? Profile(CommandLine cl)
    {
        long? start = cl.Int("--profile-step-start"), end = cl.Int("--profile-step-end");
        if (!cl.Switch("--profile"))
        {
            if (start is not null || end is not null) cl.Errors.Add("--profile-step-start/--profile-step-end need --profile.");
            return null;
        }
        var d = new ProfileRange();
        return new ProfileRange(start ?? d.StepStart, end ?? d.StepEnd);
    }
}
