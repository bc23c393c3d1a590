using System.Reflection;
using Harness.Megatron;
using Harness.Simulator.Specs;

namespace Harness.Tests.Megatron;

/// <summary>
/// The flag codec: every field of a <see cref="RunDescription"/> and of <see cref="RunSettings"/> is reached by some
/// flag, and formatting a description back into flags and parsing them gives the same description (parse(format(x)) = x),
/// for each flag alone and for random combinations of them.
/// </summary>
public class CodecTests
{
    private const int World = 64;

    /// <summary>One way to set each field of the run description away from its default (the layout ones valid on 64 ranks).</summary>
    public static readonly string[] DescriptionAtoms =
    [
        "--tensor-model-parallel-size 4", "--pipeline-model-parallel-size 4", "--num-layers-per-virtual-pipeline-stage 2",
        "--pipeline-model-parallel-size 4 --decoder-first-pipeline-num-layers 6", "--decoder-last-pipeline-num-layers 3",
        "--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split",
        "--context-parallel-size 2", "--sequence-parallel", "--micro-batch-size 2", "--global-batch-size 512",
        "--recompute-granularity selective", "--recompute-granularity full --recompute-method block --recompute-num-layers 2",
        "--kaimm-recompute-norm", "--kaimm-recompute-mlp-activation-func", "--offload-ratio 0.35", "--use-distributed-optimizer",
        "--zero-stage 3", "--sync-factor 0.5", "--fp16", "--fp16 --accumulate-allreduce-grads-in-fp32", "--bf16",
        "--cp-comm-type allgather", "--cp-comm-type a2a",
        "--context-parallel-size 4 --cp-comm-type a2a+p2p --hierarchical-context-parallel-sizes 2 2", "--attention-backend unfused", "--attention-backend fused", "--attention-backend local", "--attention-backend auto", "--overlap-grad-reduce", "--overlap-param-gather",
        "--ddp-bucket-size 1000000", "--tp-comm-overlap", "--overlap-sp-ag --overlap-sp-rs", "--no-context-parallel-comm-overlap-gemm",
        "--no-overlap-p2p-communication", "--cuda-device-max-connections 1", "--max-split-size-mb 21",
        "--no-async-tensor-model-parallel-allreduce", "--no-masked-softmax-fusion --no-bias-gelu-fusion --no-bias-dropout-fusion",
        "--no-gradient-accumulation-fusion", "--no-norm-fusion", "--no-fused-kernels", "--no-fused-gpt-kernels", "--no-bias-swiglu-fusion", "--expandable-segments",
        "--no-scatter-gather-tensors-in-pipeline",
        "--bf16 --grad-reduce-in-bf16", "--bf16 --main-grads-dtype bf16 --use-precision-aware-optimizer", "--bf16 --use-precision-aware-optimizer",
        "--fp16 --use-precision-aware-optimizer --main-params-dtype fp16", "--bf16 --use-precision-aware-optimizer --exp-avg-dtype bf16",
        "--bf16 --use-precision-aware-optimizer --exp-avg-sq-dtype fp8", "--cpu-offloading --cpu-offloading-num-layers 2",
        "--optimizer sgd", "--optimizer sgd --sgd-momentum 0.5", "--optimizer sgd --sgd-momentum 0", "--transformer-impl harness",
    ];

    /// <summary>Megatron-FSDP's atoms, apart: each contradicts several above (--zero-stage, the distributed optimizer's gradient
    /// flags), which would leave the random combinations few that run.</summary>
    public static readonly string[] FsdpAtoms =
    [
        "--use-megatron-fsdp", "--use-megatron-fsdp --data-parallel-sharding-strategy optim_grads", "--use-megatron-fsdp --megatron-fsdp-version 2",
        "--use-megatron-fsdp --fsdp-double-buffer", "--use-megatron-fsdp --suggested-communication-unit-size 100000000",
        "--bf16 --use-megatron-fsdp --megatron-fsdp-main-grads-dtype fp32",
    ];

    private static RunDescription Parse(IEnumerable<string> args, int world = World)
    {
        var cl = CommandLine.Parse(args.ToArray(), RunDescriptionFlags.Flags);
        var d = RunDescriptionFlags.Read(cl, world);
        Assert.Empty(cl.Errors);
        return d;
    }

    private static RunDescription Parse(string line, int world = World) => Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries), world);

    [Theory]
    [MemberData(nameof(Atoms))]
    public void EachFlagChangesTheDescriptionAndFormatsBackToItself(string line)
    {
        var x = Parse(line);
        Assert.NotEqual(Parse(""), x);
        Assert.Equal(x, Parse(RunDescriptionFlags.Format(x), x.WorldSize));
    }

    public static TheoryData<string> Atoms() => new(DescriptionAtoms.Concat(FsdpAtoms));

    [Fact]
    public void RandomCombinationsFormatBackToThemselves()
    {
        var random = new Random(7);
        int checkedCount = 0;
        for (int trial = 0; trial < 400; trial++)
        {
            var line = string.Join(' ', DescriptionAtoms.Where(_ => random.NextDouble() < 0.3));
            var cl = CommandLine.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries), RunDescriptionFlags.Flags);
            var x = RunDescriptionFlags.Read(cl, World);
            if (cl.Errors.Count > 0) continue; // contradictory atoms (two precisions, two TP overlaps, ...)
            Assert.Equal(x, Parse(RunDescriptionFlags.Format(x), x.WorldSize));
            checkedCount++;
        }
        Assert.True(checkedCount > 100, $"only {checkedCount} combinations were free of contradictions");
    }

    /// <summary>Every property of the description (its overlap and recompute records included) is moved by some atom, so no
    /// field is left that no flag can set.</summary>
    [Fact]
    public void EveryFieldIsReachedByAFlag()
    {
        var baseline = Parse("");
        var reached = new HashSet<string>();
        foreach (var atom in DescriptionAtoms.Concat(FsdpAtoms).Append("--tensor-model-parallel-size 2"))
            foreach (var name in Differences(baseline, Parse(atom), ""))
                reached.Add(name);
        var all = Leaves(typeof(RunDescription), "").ToList();
        Assert.Empty(all.Except(reached));
    }

    private static readonly Type[] Records = [typeof(RunDescription), typeof(OverlapSpec), typeof(RecomputeSpec), typeof(AdamStates), typeof(MegatronFsdp)];

    private static IEnumerable<PropertyInfo> Settable(Type t) =>
        t.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite && p.Name != "EqualityContract");

    private static IEnumerable<string> Leaves(Type t, string prefix) =>
        Settable(t).SelectMany(p =>
        {
            var type = Nullable.GetUnderlyingType(p.PropertyType) ?? p.PropertyType;
            return Records.Contains(type) ? Leaves(type, prefix + p.Name + ".") : [prefix + p.Name];
        });

    private static IEnumerable<string> Differences(object a, object b, string prefix)
    {
        foreach (var p in Settable(a.GetType()))
        {
            var (x, y) = (p.GetValue(a), p.GetValue(b));
            var type = Nullable.GetUnderlyingType(p.PropertyType) ?? p.PropertyType;
            if (Records.Contains(type))
            {
                var d = type == typeof(OverlapSpec) ? OverlapSpec.Default : type == typeof(MegatronFsdp) ? new MegatronFsdp() : (object)RecomputeSpec.None;
                foreach (var n in Differences(x ?? d, y ?? d, prefix + p.Name + ".")) yield return n;
            }
            else if (!Equals(x, y)) yield return prefix + p.Name;
        }
    }

    public static readonly string[] SettingsAtoms =
    [
        "--train-iters 40", "--seed 7", "--lr 3e-4", "--min-lr 3e-5", "--lr-decay-style cosine", "--lr-warmup-iters 4",
        "--lr-warmup-fraction 0.1", "--lr-decay-iters 30", "--weight-decay 0.1", "--adam-beta1 0.8", "--adam-beta2 0.95",
        "--adam-eps 1e-5", "--clip-grad 0.5", "--loss-scale 4096", "--initial-loss-scale 65536", "--min-loss-scale 2",
        "--loss-scale-window 100", "--hysteresis 1", "--data-path /data/x_text_document", "--data-path 0.3 /data/a 0.7 /data/b", "--data-path /data/a /data/b",
        "--train-data-path 1 /data/a 2 /data/b --valid-data-path /data/c --test-data-path /data/d", "--mock-data", "--save ck", "--load ck", "--load ck --load-format hf",
        "--save-interval 5", "--log-interval 10", "--make-vocab-size-divisible-by 64", "--device cuda --profile --profile-step-start 2 --profile-step-end 4",
        "--device cuda", "--libtorch /opt/torch/lib", "--gpu h200", "--nproc-per-node 8", "--nproc-per-node 4 --ranks-on-one-device", "--split 969,30,1", "--split 98/2", "--eval-interval 50", "--eval-iters 10", "--master-port 29600", "--out runs/x",
        "--exit-interval 50", "--exit-duration-in-mins 230",
        "--tensorboard-dir tb", "--tensorboard-log-interval 10", "--log-timers-to-tensorboard", "--log-memory-to-tensorboard",
        "--log-validation-ppl-to-tensorboard", "--log-world-size-to-tensorboard", "--no-log-loss-scale-to-tensorboard",
        "--disable-log-loss-scale-to-tensorboard",
    ];

    private static RunSettings Settings(IEnumerable<string> args)
    {
        var cl = CommandLine.Parse(args.ToArray(), RunSettingsFlags.Flags);
        var s = RunSettingsFlags.Read(cl);
        Assert.Empty(cl.Errors);
        return s;
    }

    [Theory]
    [MemberData(nameof(Settings_))]
    public void EachSettingFormatsBackToItself(string line)
    {
        var x = Settings(line.Split(' '));
        Assert.NotEqual(Settings([]), x);
        Assert.Equal(x, Settings(RunSettingsFlags.Format(x)));
    }

    public static TheoryData<string> Settings_() => new(SettingsAtoms);

    [Theory]
    [InlineData("--lr -1", "--lr is -1")]
    [InlineData("--adam-beta2 1", "--adam-beta2 1 is outside [0, 1)")]
    [InlineData("--adam-eps 0", "--adam-eps is 0")]
    [InlineData("--clip-grad -0.5", "--clip-grad is -0.5")]
    [InlineData("--lr-warmup-iters 200 --train-iters 100", "--lr-warmup-iters 200 exceeds the 100 decay iterations")]
    [InlineData("--lr-warmup-fraction 0.1 --lr-warmup-iters 3", "pass one of --lr-warmup-fraction and --lr-warmup-iters")]
    [InlineData("--loss-scale 0", "--loss-scale is 0; a loss scale is a finite number above 0.")]
    [InlineData("--initial-loss-scale -1", "--initial-loss-scale is -1; a loss scale is a finite number above 0.")]
    [InlineData("--min-loss-scale 0", "--min-loss-scale is 0; a loss scale is a finite number above 0.")]
    [InlineData("--initial-loss-scale 1024 --min-loss-scale 2048", "--min-loss-scale 2048 exceeds --initial-loss-scale 1024.")]
    [InlineData("--loss-scale-window 0", "--loss-scale-window is 0; it must be at least 1 iteration.")]
    [InlineData("--hysteresis 0", "--hysteresis is 0; it must be at least 1 iteration.")]
    [InlineData("--lr-decay-style WSD", "--lr-decay-style WSD (warmup-stable-decay) is not run yet")]
    [InlineData("--mock-data --data-path x", "Give one of --data-path PREFIX and --mock-data")]
    [InlineData("--split none", "--split 'none' is not up to three weights (e.g. 969,30,1 or 98/2/0).")]
    [InlineData("--split 0,1,0", "--split 0,1,0 leaves no documents to train on; give the first share a positive weight.")]
    [InlineData("--split 0,0,0", "--split 0,0,0 is not three weights of at least 0 with a positive sum (e.g. 969,30,1).")]
    [InlineData("--eval-interval 0", "--eval-interval is 0; it must be at least 1 iteration.")]
    [InlineData("--eval-iters -1", "--eval-iters is -1; it must be at least 0 (0: no validation loss).")]
    [InlineData("--ranks-on-one-device", "--ranks-on-one-device puts the --nproc-per-node ranks on one device; --nproc-per-node is 1, give at least 2.")]
    [InlineData("--exit-interval 0", "--exit-interval is 0; it must be at least 1 iteration.")]
    [InlineData("--tensorboard-log-interval 0", "--tensorboard-log-interval is 0; it must be at least 1.")]
    [InlineData("--exit-duration-in-mins -5", "--exit-duration-in-mins is -5; it must be at least 1 minute.")]
    public void OutOfRangeSettingsAreOneSentence(string line, string expected)
    {
        var cl = CommandLine.Parse(line.Split(' '), RunSettingsFlags.Flags);
        var errors = cl.Errors.Concat(RunSettingsFlags.Read(cl).Validate()).ToList();
        Assert.Contains(errors, e => e.StartsWith(expected, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("p2p", ContextParallelCommType.P2p)]
    [InlineData("allgather", ContextParallelCommType.AllGather)]
    [InlineData("all_gather", ContextParallelCommType.AllGather)]
    [InlineData("a2a", ContextParallelCommType.A2a)]
    [InlineData("a2a+p2p --hierarchical-context-parallel-sizes 2 1", ContextParallelCommType.A2aP2p)]
    public void MegatronsCpCommTypeSpellingsAreRead(string word, ContextParallelCommType expected)
    {
        var d = Parse($"--context-parallel-size 2 --cp-comm-type {word}");
        Assert.Equal(expected, d.ContextParallelComm);
        Assert.Equal(d, Parse(RunDescriptionFlags.Format(d), d.WorldSize));
    }

    [Theory]
    [InlineData("--tensor-model-paralel-size 8", "unknown option --tensor-model-paralel-size; did you mean --tensor-model-parallel-size?")]
    [InlineData("--sequence-paralel", "unknown option --sequence-paralel; did you mean --sequence-parallel?")]
    [InlineData("--moe-router-topk 2", "--moe-router-topk is a Megatron-LM flag that changes the estimate, which Harness does not model; remove it.")]
    [InlineData("--fp8-format hybrid", "--fp8-format is a Megatron-LM flag that changes the estimate, which Harness does not model; remove it.")]
    [InlineData("--pipeline-model-parallel-layout E|t*4|L", "--pipeline-model-parallel-layout is a Megatron-LM flag that changes the estimate")]
    [InlineData("--optimizer muon", "--optimizer muon is not modelled (its optimizer states differ from Adam's and SGD's); use adam or sgd.")]
    [InlineData("--context-parallel-size 4 --hierarchical-context-parallel-sizes 2 3", "--hierarchical-context-parallel-sizes 2 3 is not two positive sizes (all-to-all, ring) whose product is --context-parallel-size 4.")]
    [InlineData("--cp-comm-type ring", "--cp-comm-type 'ring' is not one of p2p, allgather")]
    public void MisspelledAndUnmodelledFlagsAreRefused(string line, string expected)
    {
        var cl = CommandLine.Parse(line.Split(' '), RunDescriptionFlags.Flags, FlagReader.Estimate);
        RunDescriptionFlags.Read(cl, World);
        Assert.Contains(cl.Errors, e => e.StartsWith(expected, StringComparison.Ordinal));
    }

    [Fact]
    public void MegatronSettingsAreAcceptedAndFlagsThatShapeTrainingOnlyByEstimates()
    {
        string[] line = ["--lr", "3e-4", "--wandb-project", "p", "--use-mcore-models", "--rotary-base", "500000", "--save-interval", "100",
            "--data-path", "0.7", "a_text_document", "0.3", "b_text_document", "--train-samples", "1000", "--init-method-std", "0.006"];
        var estimate = CommandLine.Parse(line, RunDescriptionFlags.Flags, FlagReader.Estimate);
        Assert.Empty(estimate.Errors);
        Assert.Equal(["--lr 3e-4", "--wandb-project p", "--use-mcore-models", "--rotary-base 500000", "--save-interval 100",
            "--data-path 0.7 a_text_document 0.3 b_text_document", "--train-samples 1000", "--init-method-std 0.006"], estimate.Ignored);
        // A run applies its own schedule flags (not in this flag list) and refuses those that would shape training unapplied.
        var run = CommandLine.Parse(line, RunDescriptionFlags.Flags, FlagReader.Run);
        Assert.Equal(["--wandb-project p", "--use-mcore-models", "--save-interval 100", "--data-path 0.7 a_text_document 0.3 b_text_document"], run.Ignored);
        Assert.Equal(
        [
            "--lr changes what harness run trains, and harness run does not apply it yet; remove it.",
            "--rotary-base changes what harness run trains, and harness run does not apply it yet; remove it.",
            "--train-samples changes what harness run trains, and harness run does not apply it yet; remove it.",
            "--init-method-std changes what harness run trains, and harness run does not apply it yet; remove it.",
        ], run.Errors);
        // Harness's own tools take no Megatron flag, and suggest only their own.
        var tool = CommandLine.Parse(["--tensor-model-paralel-size", "2"], [new Flag("--json", false, "")]);
        Assert.Equal(["unknown option --tensor-model-paralel-size; the command's --help lists its options."], tool.Errors);
    }

    [Fact]
    public void MegatronDefaultsAreTheRecordsDefaults()
    {
        // Megatron-LM (megatron/training/arguments.py): --overlap-grad-reduce and --overlap-param-gather off, pipeline p2p
        // overlapped, --cp-comm-type p2p, gradient-accumulation fusion on, dropout 0.1, fp32. The attention backend is flash,
        // what the reproduced Megatron-LM launch lines ran (--use-flash-attn); Megatron-core's auto is a choice of its own.
        var d = Parse("");
        Assert.Equal(new RunDescription(DataParallel: World, GlobalBatch: World), d); // Megatron: global batch = micro-batch x data-parallel size
        var o = d.OverlapOrDefault;
        Assert.False(o.GradientReduce || o.ParamGather);
        Assert.True(o.PipelineP2p && d.AttentionBackend == AttentionBackend.Flash && d.GradientAccumulationFusion);
        Assert.Equal(ContextParallelCommType.P2p, d.ContextParallelComm);
        Assert.Equal(Precision.Fp32, d.Precision);
        // Passing a default's value changes nothing.
        Assert.Equal(d, Parse("--attention-backend flash --cp-comm-type p2p --use-flash-attn --fp32 --optimizer adam --transformer-impl transformer_engine"));
        var s = new RunSettings();
        Assert.Equal((1234, 100, 128, 0.0, LearningRateDecayStyle.Linear), (s.Seed, s.LogInterval, s.MakeVocabSizeDivisibleBy, s.LearningRateOrDefault.MinLr, s.LearningRateOrDefault.DecayStyle));
        Assert.Equal(new AdamSettings(0.9, 0.999, 1e-8, 0.01, 1.0), s.AdamOrDefault);
        // Megatron's _add_mixed_precision_args: no constant scale, 2^32, 1, 1000, 2.
        Assert.Equal(new LossScaleSettings(null, Math.Pow(2, 32), 1, 1000, 2), s.LossScaleOrDefault);
    }
}
