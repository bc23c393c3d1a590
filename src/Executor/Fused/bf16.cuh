// What every module of the executor's CUDA kernels starts with (FusedKernels and GptKernels put it before their
// source): bf16 handled as its bit pattern, so no CUDA header is needed under NVRTC, float32 arithmetic, and the
// vector loads and grid-stride loops the kernels share.
typedef unsigned short bf16;
typedef long long i64;

__device__ __forceinline__ float to_float(bf16 h) { return __uint_as_float(((unsigned)h) << 16); }

// Round to nearest even, as c10::BFloat16 does; NaN stays NaN.
__device__ __forceinline__ bf16 to_bf16(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)0x7fc0u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

// V consecutive bf16 values; V = 8 is one 16-byte access (the caller guarantees the alignment).
template <int V> __device__ __forceinline__ void load(const bf16* p, float* out)
{
    if constexpr (V == 8) {
        uint4 raw = *reinterpret_cast<const uint4*>(p);
        const bf16* h = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = to_float(h[i]);
    } else {
#pragma unroll
        for (int i = 0; i < V; i++) out[i] = to_float(p[i]);
    }
}

template <int V> __device__ __forceinline__ void store(bf16* p, const float* in)
{
    if constexpr (V == 8) {
        uint4 raw;
        bf16* h = reinterpret_cast<bf16*>(&raw);
#pragma unroll
        for (int i = 0; i < 8; i++) h[i] = to_bf16(in[i]);
        *reinterpret_cast<uint4*>(p) = raw;
    } else {
#pragma unroll
        for (int i = 0; i < V; i++) p[i] = to_bf16(in[i]);
    }
}

__device__ __forceinline__ i64 first_index() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_stride() { return (i64)gridDim.x * blockDim.x; }
