namespace Harness.Simulator.Specs;

/// <summary>A storage type Megatron's precision-aware optimizer accepts for an optimizer tensor.</summary>
public enum StateDtype { Fp32, Fp16, Bf16, Fp8 }

/// <summary>
/// How Adam's states are stored: Megatron's --use-precision-aware-optimizer with --main-params-dtype, --exp-avg-dtype and
/// --exp-avg-sq-dtype (megatron/training/arguments.py; the states then live in Transformer Engine's FusedAdam). Without it,
/// fp32 master weights and fp32 moments. With it and bf16 weights, fp32 master weights are kept as their low 16 bits only:
/// Megatron's OptimizerConfig.store_param_remainders (default true, megatron/core/optimizer/optimizer_config.py) has
/// FusedAdam store an int16 remainder beside the bf16 weight, which holds the high 16 bits
/// (transformer_engine/pytorch/optimizers/fused_adam.py).
/// </summary>
public sealed record AdamStates(
    bool PrecisionAware = false,
    StateDtype MainParams = StateDtype.Fp32,
    StateDtype ExpAvg = StateDtype.Fp32,
    StateDtype ExpAvgSq = StateDtype.Fp32)
{
    public static AdamStates Default { get; } = new();

    public static double Bytes(StateDtype d) => d switch { StateDtype.Fp32 => 4, StateDtype.Fp8 => 1, _ => 2 };

    /// <summary>Whether the fp32 master weights are stored as remainders beside bf16 weights.</summary>
    public bool ParamRemainders(Precision p) => PrecisionAware && p == Precision.Bf16 && MainParams == StateDtype.Fp32;

    /// <summary>Bytes per parameter of the master weights (none in fp32 training: the weights are their own master).</summary>
    public double MasterBytes(Precision p) =>
        p == Precision.Fp32 ? 0 : ParamRemainders(p) ? 2 : Bytes(MainParams);

    /// <summary>Bytes per parameter the optimizer holds: master weights, first and second moment.</summary>
    public double BytesPerParameter(Precision p) => MasterBytes(p) + Bytes(ExpAvg) + Bytes(ExpAvgSq);

    /// <summary>Every reason these states are invalid, in Megatron's words; empty when valid.</summary>
    public IEnumerable<string> Validate(Precision p)
    {
        if (!PrecisionAware && this != Default)
            yield return "--main-params-dtype, --exp-avg-dtype and --exp-avg-sq-dtype apply only with --use-precision-aware-optimizer.";
        if (MainParams is StateDtype.Bf16 or StateDtype.Fp8)
            yield return $"--main-params-dtype {MainParams.ToString().ToLowerInvariant()} is not one of fp32, fp16.";
        if (PrecisionAware && p == Precision.Fp32)
            yield return "--use-precision-aware-optimizer needs --bf16 or --fp16: in fp32 training there are no main parameters to store in lower precision.";
    }
}
