namespace Harness.Simulator.Specs;

/// <summary>
/// GPU presets, by the names `--gpu` accepts. Bandwidths are per GPU and per direction.
/// Latencies are per message on an idle link (NCCL's measured small-message times on these fabrics
/// are 2-10 µs; we take the low end for NVLink/NVSwitch and higher for NICs).
/// </summary>
public static class GpuPresets
{
    /// <summary>The GPU a command assumes when none is named (simulate's cluster, a run's MFU).</summary>
    public const string DefaultName = "h100-sxm";

    private const double GB = 1e9;
    private const long GiB = 1L << 30;
    private const long MiB = 1L << 20;
    private const double Gbps = 1e9 / 8;

    // Kernel efficiencies (EfficiencySpec). Volta has no flash attention and no cuDNN fused attention (both need sm80):
    // Megatron's unfused attention runs
    // its score matmuls at the (lower, head-dim-shaped) GEMM rate plus a memory-bound softmax. cuBLAS fp16 GEMMs
    // reach 95-105 TFLOP/s on a cold V100 (0.75-0.8 of peak); held at load we take 0.70, the same ratio to
    // the cold rate as measured on H100 below.
    private static readonly EfficiencySpec Volta = new(Gemm: 0.70, Attention: 0.30, Hbm: 0.80);
    // Ampere: cuBLAS bf16 GEMMs sustain ~250 of 312 TFLOP/s in training (Narayanan et al. 2021 reach 52% of
    // peak end to end, bubbles and communication included); FlashAttention-2 reaches 50-73% of peak forward
    // and backward on A100 (Dao 2023, figures 4-5). cuDNN's fused attention runs on sm80 too (Transformer Engine prefers
    // FlashAttention-2 there); no published A100 comparison of the two was found, so it takes FlashAttention-2's rate until
    // `harness calibrate` measures it.
    // Attention dropout drawn inside a flash-style kernel (EfficiencySpec.DropoutDrawsPerSecond): measured on an H200 below;
    // the A100 has the same 64 INT32 lanes per SM as Hopper (NVIDIA A100 and H100 architecture whitepapers), so the rate
    // scales by SMs x boost clock: 108 x 1410 MHz against 132 x 1980 MHz.
    private static readonly EfficiencySpec Ampere = new(Gemm: 0.80, Attention: 0.60, Hbm: 0.80, FusedAttention: 0.60,
        DropoutDrawsPerSecond: HopperDropoutDrawsPerSecond * (108 * 1410.0) / (132 * 1980.0));
    // Hopper, measured on an H100 SXM 80GB (PyTorch 2.11, CUDA 13, 2026-11-25; the H800 has the same SMs, clocks
    // and HBM): bf16 GEMMs of the reproduced models' shapes (Llama 7B/65B/175B at t 1-4, GPT 1.7B/1T), forward,
    // data- and weight-gradient, on a GPU held at load: 680-710 TFLOP/s for every shape = 0.70 of peak (a cold
    // GPU briefly reaches 0.75-0.80). FlashAttention-2 (PyTorch's flash SDPA kernel), causal, head dim 128, s 8k-12k:
    // forward 311-334 TFLOP/s, backward (2.5x the forward FLOPs) 268-294: 0.29 of peak, forward and backward
    // together. (FlashAttention-2 does not use Hopper's TMA/WGMMA: Shah et al. 2024, FlashAttention-3, fig. 5.)
    // cuDNN 9's fused attention on the same H100 SXM5 (Shah et al. 2024, arXiv 2407.08608, head dim 128, s 4k-16k): forward
    // with the causal mask 518-539 TFLOP/s to FlashAttention-2's 319-335 (fig. 5), backward 499-518 to 310-322 (fig. 6);
    // forward and backward together (backward counted as 2.5 forwards) 1.61 times FlashAttention-2's rate. Applied to the
    // rate measured here at load: 0.29 x 1.61 = 0.47. `harness calibrate` on an H200 (results/calibration/nvidia-h200/reproduced,
    // PyTorch 2.11, whose default kernel there was cuDNN's) measured 0.46-0.52 at head dim 128.
    // Attention dropout inside the flash kernel, measured on one H200 (results/executor/nvidia-h200-b/dropout, gpt2-large
    // s 1024 micro-batch 32, PyTorch 2.11's SDPA): 400.4 ms per step with hidden and attention dropout 0.1 against 378.2
    // without, 22.2 ms. Of it the 73 separate hidden-dropout kernels (one per embedding, two per layer: read 2 B, write 2 B
    // and a 1-byte mask forward, the same backward, over 32 x 1024 x 1280 elements) stream 30.6 GB at the 4408 GB/s the same
    // GPU streams an add (results/calibration/nvidia-h200/gpt2-large-b32): 6.9 ms. The other 15.3 ms draw 36 layers x
    // 32 x 20 heads x 1024^2 / 2 causal probabilities twice (forward, and backward's regeneration): 2.4e10 draws, 1.58e12 per
    // second, about 6 per SM and clock, the order of a Philox4x32-10 stream on 64 INT32 lanes per SM.
    // cuDNN attention's rate by sequence length (EfficiencySpec.AttentionHalfKeys): `harness calibrate` on one H200
    // (results/calibration/nvidia-h200/reproduced, head dim 128, held at load; PyTorch 2.11's SDPA ran cuDNN's sm90 flash
    // kernels there, as the kernel profile results/executor/nvidia-h200/profile-caat-1b-mbs8 names them) timed 8 x 6 heads at
    // s 2048 at 0.390 of peak and 1 x 24 heads at s 8192 at 0.516: k/(k + k½) gives that 0.755 ratio at k½ = 993, taken as
    // 1000. The other lengths and head dims timed on that GPU check it: s 4096 predicted 0.902 of the s 8192 rate, measured
    // 0.88-0.90; gpt2-large (head dim 64, s 1024) and caat-1b (64, s 2048) predicted 0.267 and 0.354 from the preset's
    // 0.47, measured 0.277 and 0.338-0.344.
    private static readonly EfficiencySpec Hopper = new(Gemm: 0.70, Attention: 0.29, Hbm: 0.80, FusedAttention: 0.47,
        DropoutDrawsPerSecond: HopperDropoutDrawsPerSecond, AttentionHalfKeys: 1000);
    private const double HopperDropoutDrawsPerSecond = 1.58e12;
    // Gaudi: Intel's published Llama training MFU on Gaudi 2 is ~50-60%; Gaudi 3 lower at launch.
    private static readonly EfficiencySpec Gaudi2 = new(Gemm: 0.70, Attention: 0.40, Hbm: 0.80);
    private static readonly EfficiencySpec Gaudi3 = new(Gemm: 0.60, Attention: 0.35, Hbm: 0.80);

    /// <summary>Every preset, keyed by its name.</summary>
    public static IReadOnlyDictionary<string, GpuSpec> All { get; } = new[]
    {
        // NVIDIA DGX-2H: 16 V100 SXM3 32GB at 450 W; 130 TFLOP/s fp16 tensor peak (Shoeybi et al. 2019 quote
        // 39 TFLOP/s as 30% of peak); HBM2 ~1 TB/s (DGX-2H datasheet: 1134 GB/s at the higher memory clock,
        // we take 1000 GB/s); NVSwitch, 6 NVLink2 links x 25 GB/s = 150 GB/s per direction;
        // 8 x 100 Gb/s InfiniBand EDR per 16 GPUs = 6.25 GB/s per GPU; PCIe Gen3 x16 ~ 12 GB/s achievable.
        new GpuSpec("v100-32gb", 130e12, 130e12, 32 * GiB, 1000 * GB,
            new LinkSpec(150 * GB, 5e-6), new LinkSpec(100 * Gbps * 8 / 16, 10e-6), 12 * GB, 16, Volta, ComputeCapability: 70),
        // NVIDIA A100 SXM4 80GB datasheet: 312 TFLOP/s bf16/fp16 dense, 2039 GB/s HBM2e, NVLink3 600 GB/s
        // bidirectional = 300 GB/s per direction. Selene/DGX A100: 8 GPUs, 8 x HDR 200 Gb/s (25 GB/s per GPU),
        // PCIe Gen4 x16 ~ 25 GB/s achievable.
        new GpuSpec("a100-80gb", 312e12, 312e12, 81920 * MiB, 2039 * GB,
            new LinkSpec(300 * GB, 4e-6), new LinkSpec(200 * Gbps, 8e-6), 25 * GB, 8, Ampere, ComputeCapability: 80),
        // NVIDIA A800 SXM 80GB: the A100 with NVLink capped at 400 GB/s bidirectional (200 per direction).
        // Megatron-Kwai's cluster: 8 x 100 Gb/s NICs per node (12.5 GB/s per GPU).
        new GpuSpec("a800-80gb", 312e12, 312e12, 81920 * MiB, 2039 * GB,
            new LinkSpec(200 * GB, 4e-6), new LinkSpec(100 * Gbps, 8e-6), 25 * GB, 8, Ampere, ComputeCapability: 80),
        // NVIDIA H100 SXM5 80GB datasheet: 989 TFLOP/s bf16/fp16 dense, 3.35 TB/s HBM3, NVLink4 900 GB/s
        // bidirectional = 450 per direction; DGX H100: 8 GPUs, one 400 Gb/s ConnectX-7 per GPU (50 GB/s);
        // PCIe Gen5 x16 ~ 55 GB/s achievable. Driver-reported memory 81559 MiB.
        new GpuSpec("h100-sxm", 989e12, 989e12, 81559 * MiB, 3350 * GB,
            new LinkSpec(450 * GB, 3e-6), new LinkSpec(400 * Gbps, 6e-6), 55 * GB, 8, Hopper, ComputeCapability: 90),
        // NVIDIA H800 SXM5 80GB: the H100 with NVLink capped at 400 GB/s bidirectional (200 per direction).
        // Megatron-Kwai ATC'24 cluster: 8 per node, 8 x 100 Gb/s NICs per node, PCIe 5.0 x16 per GPU.
        new GpuSpec("h800", 989e12, 989e12, 81559 * MiB, 3350 * GB,
            new LinkSpec(200 * GB, 3e-6), new LinkSpec(100 * Gbps, 6e-6), 55 * GB, 8, Hopper, ComputeCapability: 90),
        // NVIDIA H200 SXM 141GB datasheet: 989 TFLOP/s bf16 dense, 4.8 TB/s HBM3e, NVLink4 450 GB/s per
        // direction; HGX H200 with one 400 Gb/s NIC per GPU. Driver-reported memory 143771 MiB.
        new GpuSpec("h200", 989e12, 989e12, 143771 * MiB, 4800 * GB,
            new LinkSpec(450 * GB, 3e-6), new LinkSpec(400 * Gbps, 6e-6), 55 * GB, 8, Hopper, ComputeCapability: 90),
        // Intel Gaudi 2 (HL-225H) white paper: 432 TFLOP/s bf16 (MME), 96 GB HBM2e at 2.46 TB/s, 24 x 100 GbE
        // RoCE ports: 21 connect the 8 chips of a node all-to-all (3 ports = 37.5 GB/s to each peer, 262.5 GB/s
        // in all), 3 face the scale-out network (37.5 GB/s); PCIe Gen4 x16.
        new GpuSpec("gaudi2", 432e12, 432e12, 96 * GiB, 2460 * GB,
            new LinkSpec(21 * 100 * Gbps, 6e-6), new LinkSpec(3 * 100 * Gbps, 10e-6), 25 * GB, 8, Gaudi2),
        // Intel Gaudi 3 (HL-325L) white paper: 1835 TFLOP/s bf16 (MME), 128 GB HBM2e at 3.7 TB/s, 24 x 200 GbE:
        // 21 intra-node (525 GB/s), 3 scale-out (75 GB/s); PCIe Gen5 x16.
        new GpuSpec("gaudi3", 1835e12, 1835e12, 128 * GiB, 3700 * GB,
            new LinkSpec(21 * 200 * Gbps, 6e-6), new LinkSpec(3 * 200 * Gbps, 10e-6), 55 * GB, 8, Gaudi3),
    }.ToDictionary(g => g.Name, StringComparer.OrdinalIgnoreCase);
}
