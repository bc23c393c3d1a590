using Harness.Simulator.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Harness.Executor.Optimizer;

/// <summary>
/// Adam's master weights and moments as Transformer Engine's FusedAdam stores them under Megatron's
/// --use-precision-aware-optimizer (--main-params-dtype, --exp-avg-dtype, --exp-avg-sq-dtype;
/// transformer_engine/pytorch/optimizers/fused_adam.py and common/multi_tensor/adam.cu at NVIDIA/TransformerEngine
/// d0067d0). The arithmetic runs in float32 on unscaled copies (<see cref="Unscaled"/>, <see cref="UnscaledMaster"/>), and
/// the results are stored back in each state's dtype (<see cref="Store"/>, <see cref="StoreMaster"/>):
/// - float32: as is;
/// - bf16: rounded to nearest (FusedAdam copies unscaled_state.bfloat16(), no scale);
/// - fp16: per tensor (here: per parameter's piece of the optimizer's shard, the tensors FusedAdam sees under the
///   distributed optimizer), scaled so that its absolute maximum lands on half fp16's largest value: s = absmax / 32752,
///   stored round(x · (1/s)), read back stored · s (_apply_scale and get_unscaled_state);
/// - float32 master weights beside bf16 weights (OptimizerConfig.store_param_remainders, default true): only the low 16
///   bits, as an int16 remainder; the bf16 weight is the high 16 bits, plus one where the remainder is negative (its top bit
///   set: rounding half away from zero), and float32 = (weight − [remainder &lt; 0]) · 2^16 + (remainder mod 2^16) restores
///   every bit (AdamFunctorMasterParamRemainder).
/// The model's 16-bit weights are written from the float32 result before the master weights are stored (the kernel writes
/// them from its registers), so fp16 master weights do not round the weights twice.
/// - fp8 moments: E4M3 bytes (a Float8Tensor with its own quantizer), per tensor s = absmax / 448, the quantizer's scale
///   q = 1/s, stored E4M3(x · q) rounded to nearest, read back stored · (1/q) (Float8Tensor's scale_inv). Where s is 0
///   (an all-zero tensor) q is taken as 0, not FusedAdam's 1/0, which would store 0 · ∞, a NaN.
/// </summary>
public sealed class PrecisionAwareStates : IDisposable
{
    /// <summary>FusedAdam's dtype_to_range_map: torch.finfo(torch.float16).max / 2 for fp16, E4M3's largest value for fp8.</summary>
    private const float Fp16Range = 65504f / 2, Fp8Range = 448;

    // TorchScript compiled here can name neither torch.int16 and the like nor Tensor.view(dtype): dtypes are c10's ScalarType
    // codes, passed by keyword to view_copy's dtype overload (a bit-for-bit reinterpretation): 2 int16, 3 int32, 6 float32,
    // 15 bfloat16.
    private const string Source = @"
def join(param: Tensor, remainder: Tensor):
    rem = remainder.to(dtype=3)
    high = torch.view_copy(param, dtype=2).to(dtype=3) - (rem < 0).to(dtype=3)
    return torch.view_copy(torch.bitwise_or(torch.bitwise_left_shift(high, 16), torch.bitwise_and(rem, 65535)), dtype=6)

def split(master: Tensor, param: Tensor, remainder: Tensor):
    bits = torch.view_copy(master.contiguous(), dtype=3)
    rem = torch.bitwise_right_shift(torch.bitwise_left_shift(bits, 16), 16)
    high = torch.bitwise_right_shift(bits, 16) + (rem < 0).to(dtype=3)
    param.copy_(torch.view_copy(high.to(dtype=2), dtype=15))
    remainder.copy_(rem.to(dtype=2))
";

    // 0 uint8, 24 float8_e4m3fn (c10's ScalarType codes, as above).
    private const string Fp8Source = @"
def to_e4m3(x: Tensor):
    return torch.view_copy(x.to(dtype=24), dtype=0)

def from_e4m3(bits: Tensor):
    return torch.view_copy(bits, dtype=24).to(dtype=6)
";

    // Units of their own: a libtorch without float8 fails here, not in the remainders.
    private static readonly Lazy<jit.CompilationUnit> Fp8Unit = new(() => jit.compile(Fp8Source));

    private static readonly Lazy<jit.CompilationUnit> Unit = new(() => jit.compile(Source));

    private readonly IReadOnlyList<(long Start, long Length)> pieces;
    private readonly ScalarType paramDtype;
    /// <summary>Per stored tensor (master weights, exp_avg, exp_avg_sq): each piece's scale s, float32; null when unscaled.</summary>
    private readonly Tensor?[] scales;

    /// <summary>The master weights as stored: int16 remainders, fp16 (scaled) or float32.</summary>
    public Tensor Master { get; }

    /// <summary>exp_avg and exp_avg_sq as stored: float32, bf16 or fp16 (scaled).</summary>
    public IReadOnlyList<Tensor> Moments { get; }

    /// <param name="pieces">The tensors FusedAdam scales one by one, as ranges of the state vector, in order and covering it.</param>
    public PrecisionAwareStates(AdamStates spec, ScalarType paramDtype, IReadOnlyList<(long Start, long Length)> pieces, Device device)
    {
        (this.pieces, this.paramDtype) = (pieces, paramDtype);
        long count = pieces.Sum(p => p.Length);
        bool remainders = spec.ParamRemainders(paramDtype == ScalarType.BFloat16 ? Precision.Bf16 : Precision.Fp16);
        Master = zeros(count, dtype: remainders ? ScalarType.Int16 : TypeOf(spec.MainParams), device: device);
        Moments = [zeros(count, dtype: TypeOf(spec.ExpAvg), device: device), zeros(count, dtype: TypeOf(spec.ExpAvgSq), device: device)];
        scales = new[] { Master, Moments[0], Moments[1] }
            .Select(t => t.dtype is ScalarType.Float16 or ScalarType.Byte ? ones(pieces.Count, dtype: ScalarType.Float32, device: device) : null).ToArray();
    }

    /// <summary>libtorch's type for a state dtype as stored (fp8: its E4M3 bytes).</summary>
    public static ScalarType TypeOf(StateDtype d) => d switch
    {
        StateDtype.Fp16 => ScalarType.Float16,
        StateDtype.Bf16 => ScalarType.BFloat16,
        StateDtype.Fp8 => ScalarType.Byte,
        _ => ScalarType.Float32,
    };

    /// <summary>Bytes per element of the stored master weights and moments (the simulator's AdamStates.BytesPerParameter).</summary>
    public long BytesPerElement => Master.element_size() + Moments.Sum(m => m.element_size());

    /// <summary>Master weights over [<paramref name="from"/>, + its length) from the model's weights there, <paramref name="param"/>
    /// (their float32 values; FusedAdam's initialize_state: zero remainders, or the weights stored as master weights).</summary>
    public void Initialize(long from, Tensor param)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (Master.dtype == ScalarType.Int16) Master.narrow(0, from, param.numel()).zero_();
        else Store(0, from, param.numel(), param.to(ScalarType.Float32));
    }

    /// <summary>Float32 master weights over [<paramref name="from"/>, + count) from the model's weights there, <paramref name="param"/>.</summary>
    public Tensor UnscaledMaster(long from, long count, Tensor param) =>
        Master.dtype == ScalarType.Int16
            ? (Tensor)Unit.Value.invoke("join", param, Master.narrow(0, from, count))
            : Unscaled(0, from, count);

    /// <summary>Float32 values of moment <paramref name="moment"/> (0: exp_avg, 1: exp_avg_sq) over [<paramref name="from"/>, + count).</summary>
    public Tensor UnscaledMoment(int moment, long from, long count) => Unscaled(moment + 1, from, count);

    /// <summary>Stores updated master weights <paramref name="master"/> (float32) and writes the model's weights <paramref name="param"/>
    /// from them. From a checkpoint: <paramref name="savedScales"/> (per element) the scales they were stored with, and
    /// <paramref name="weights"/> the 16-bit weights, which fp16 master weights do not determine.</summary>
    public void StoreMaster(long from, Tensor master, Tensor param, Tensor? savedScales = null, Tensor? weights = null)
    {
        using var _ = no_grad();
        if (Master.dtype == ScalarType.Int16)
        {
            Unit.Value.invoke("split", master, param, Master.narrow(0, from, master.numel()));
            return;
        }
        param.copy_(weights ?? master);
        Store(0, from, master.numel(), master, savedScales);
    }

    /// <summary>Stores moment <paramref name="moment"/>'s updated float32 values (from a checkpoint, with the scales they were stored with).</summary>
    public void StoreMoment(int moment, long from, Tensor values, Tensor? savedScales = null)
    {
        using var _ = no_grad();
        Store(moment + 1, from, values.numel(), values, savedScales);
    }

    /// <summary>Whether state <paramref name="state"/> (0: master weights, 1: exp_avg, 2: exp_avg_sq) is stored scaled (fp16, fp8).</summary>
    public bool Scaled(int state) => scales[state] is not null;

    /// <summary>The scale of each element's piece over [<paramref name="from"/>, + count) of a scaled state, float32: what a
    /// checkpoint keeps beside the unscaled values, so that storing them again gives the same bits.</summary>
    public Tensor ElementScales(int state, long from, long count)
    {
        var expanded = empty(count, dtype: ScalarType.Float32, device: Master.device);
        foreach (var (at, length, piece) in Within(from, count))
            expanded.narrow(0, at - from, length).copy_(scales[state]![piece].expand(length));
        return expanded;
    }

    private Tensor Stored(int state) => state == 0 ? Master : Moments[state - 1];

    private Tensor Unscaled(int state, long from, long count)
    {
        var stored = Stored(state).narrow(0, from, count);
        if (stored.dtype == ScalarType.Float32) return stored; // the state itself: the update writes it in place
        bool fp8 = stored.dtype == ScalarType.Byte;
        var values = fp8 ? (Tensor)Fp8Unit.Value.invoke("from_e4m3", stored) : stored.to(ScalarType.Float32);
        if (scales[state] is { } s)
            foreach (var (at, length, piece) in Within(from, count))
            {
                using var scope = NewDisposeScope();
                values.narrow(0, at - from, length).mul_(fp8 ? Inverse(Inverse(s[piece])) : s[piece]);
            }
        return values;
    }

    /// <summary>_apply_scale: per piece, s = absmax / 32752 and stored = round(x · (1/s)) (1/s taken as 0 where s is 0). A piece
    /// whose elements all carry one of <paramref name="savedScales"/> (a checkpoint's, cut as this piece is) takes that scale
    /// instead, so the stored values are those saved, bit for bit; FusedAdam.load_state_dict recomputes it, which can move the
    /// scale by its last bit.</summary>
    private void Store(int state, long from, long count, Tensor values, Tensor? savedScales = null)
    {
        using var scope = NewDisposeScope();
        var stored = Stored(state).narrow(0, from, count);
        if (scales[state] is not { } s)
        {
            stored.copy_(values);
            return;
        }
        bool fp8 = stored.dtype == ScalarType.Byte;
        foreach (var (at, length, piece) in Within(from, count))
        {
            var x = values.narrow(0, at - from, length);
            var saved = savedScales?.narrow(0, at - from, length);
            bool uniform = saved is not null && saved.min().item<float>() == saved.max().item<float>();
            using var range = (fp8 ? Fp8Range : Fp16Range).ToScalar();   // held until the call returns (HeldScalars says why)
            var scale = uniform ? saved![0] : x.abs().max().div(range);
            s[piece].copy_(scale);
            var scaled = x * Inverse(scale);
            stored.narrow(0, at - from, length).copy_(fp8 ? (Tensor)Fp8Unit.Value.invoke("to_e4m3", scaled) : scaled);
        }
    }

    /// <summary>1/s in float32, 0 where s is 0 (FusedAdam's rscale; the fp8 quantizer's scale, and its scale_inv from that).</summary>
    private static Tensor Inverse(Tensor s)
    {
        using var zero = 0.ToScalar();   // held until the call returns (HeldScalars says why)
        return where(s.gt(zero), s.reciprocal(), zeros_like(s));
    }

    /// <summary>The pieces that lie in [from, from + count), each cut to it: (start, length, piece index). The optimizer's
    /// buckets begin and end at piece boundaries, so no piece is cut.</summary>
    private IEnumerable<(long At, long Length, int Piece)> Within(long from, long count)
    {
        for (int i = 0; i < pieces.Count; i++)
        {
            var (start, length) = pieces[i];
            if (start + length <= from || start >= from + count) continue;
            if (start < from || start + length > from + count)
                throw new InvalidOperationException($"piece [{start}, {start + length}) is cut by the range [{from}, {from + count}).");
            yield return (start, length, i);
        }
    }

    /// <summary>The per-piece scales of the master weights and moments (null where unscaled), for tests and checkpoints.</summary>
    public IReadOnlyList<Tensor?> Scales => scales;

    public void Dispose()
    {
        Master.Dispose();
        foreach (var m in Moments) m.Dispose();
        foreach (var s in scales) s?.Dispose();
    }
}
