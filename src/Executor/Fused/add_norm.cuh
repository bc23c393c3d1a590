// The residual add fused with the norm after it (Megatron-core's and Transformer Engine's fusion of the residual with
// the next norm), for both of Megatron's norms: LayerNorm (Ba et al. 2016; Centered: the mean subtracted, a bias added)
// and RMSNorm (Zhang and Sennrich 2019; neither). Each module that serves a norm (gpt_kernels.cu: LayerNorm, the GPT
// path; kernels.cu: RMSNorm, the Llama path) declares its entry points over these templates; bf16.cuh precedes this.

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total. `shared` holds 32 floats;
// the first barrier lets a second call reuse it after every warp has read the first call's partial sums.
__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float block_sum(float v, float* shared)
{
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    return warp_sum(lane < warps ? shared[lane] : 0.0f);
}

// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a counter-based
// generator, so whether an element is dropped is a pure function of (seed, element index), and backward regenerates the
// forward's mask instead of keeping a byte per element. Fused/Philox.cs is the same function on the host (checked against
// Random123's known-answer vectors), from which kernel-check rebuilds the masks.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, unsigned k0, unsigned k1)
{
#pragma unroll
    for (int round = 0; round < 10; round++) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        unsigned lo0 = 0xD2511F53u * c.x, hi0 = __umulhi(0xD2511F53u, c.x);
        unsigned lo1 = 0xCD9E8D57u * c.z, hi1 = __umulhi(0xCD9E8D57u, c.z);
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    }
    return c;
}

// Dropout's factor for the V elements from element e of the tensor on: `scale` (1 / (1 - p)) where the element is kept,
// 0 where it is dropped. Element e's uniform is word e mod 4 of the Philox block with counter (e / 4 low, high, 0, 0) and
// key (seed low, high), as (word >> 8)·2^-24, kept when at least p (libtorch's dropout keeps with probability 1 - p alike).
template <int V> __device__ __forceinline__ void dropout_factors(i64 e, unsigned long long seed, float p, float scale, float* f)
{
    uint4 block = make_uint4(0, 0, 0, 0);
    i64 current = -1;
#pragma unroll
    for (int i = 0; i < V; i++) {
        i64 n = (e + i) >> 2;
        if (n != current) {
            block = philox4x32_10(make_uint4((unsigned)n, (unsigned)((unsigned long long)n >> 32), 0u, 0u), (unsigned)seed, (unsigned)(seed >> 32));
            current = n;
        }
        int lane = (int)((e + i) & 3);
        unsigned word = lane == 0 ? block.x : lane == 1 ? block.y : lane == 2 ? block.z : block.w;
        f[i] = (float)(word >> 8) * 5.9604644775390625e-8f >= p ? scale : 0.0f;
    }
}

// s = x + dropout(r) (p = 0: x + r), then LayerNorm y = (s - mean) * rstd * gamma + beta with rstd = 1 / sqrt(biased variance + eps), or RMSNorm
// y = s * rstd * gamma with rstd = 1 / sqrt(mean(s²) + eps). One block per row of h. The sum is rounded to bf16 before the
// statistics are taken, as the unfused path normalizes the bf16 sum it stored; y is rounded once, after float32
// arithmetic. mean (LayerNorm only) and rstd are kept in float32 for backward, as libtorch's norms keep them. The row is
// read once from HBM: the later passes read back this thread's own writes of s (in cache: a row is a few KB). LayerNorm's
// variance by two passes (squared deviations from the mean), not E[s²] - mean².
template <int V, bool Centered> __device__ void add_norm_forward(const bf16* __restrict__ x, const bf16* __restrict__ r,
                                                                 const bf16* __restrict__ gamma, const bf16* __restrict__ beta,
                                                                 bf16* s, bf16* __restrict__ y, float* __restrict__ mean_out,
                                                                 float* __restrict__ rstd_out, i64 h, float eps, float p,
                                                                 float scale, unsigned long long seed)
{
    __shared__ float shared[32];
    i64 at = (i64)blockIdx.x * h, step = (i64)blockDim.x * V;
    float total = 0.0f, squares = 0.0f;
    for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
        float a[V], b[V];
        load<V>(x + at + j, a);
        load<V>(r + at + j, b);
        if (p > 0.0f) {
            // Megatron's bias-dropout-add: the dropped r rounded to bf16, as libtorch's dropout stores it, then the add.
            float f[V];
            dropout_factors<V>(at + j, seed, p, scale, f);
#pragma unroll
            for (int i = 0; i < V; i++) b[i] = to_float(to_bf16(b[i] * f[i]));
        }
#pragma unroll
        for (int i = 0; i < V; i++) {
            a[i] = to_float(to_bf16(a[i] + b[i]));
            if constexpr (Centered) total += a[i];
            else squares += a[i] * a[i];
        }
        store<V>(s + at + j, a);
    }
    float mean = 0.0f;
    if constexpr (Centered) {
        mean = block_sum(total, shared) / (float)h;
        for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
            float a[V];
            load<V>(s + at + j, a);
#pragma unroll
            for (int i = 0; i < V; i++) squares += (a[i] - mean) * (a[i] - mean);
        }
    }
    float rstd = rsqrtf(block_sum(squares, shared) / (float)h + eps);
    for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
        float a[V], g[V];
        load<V>(s + at + j, a);
        load<V>(gamma + j, g);
        if constexpr (Centered) {
            float b[V];
            load<V>(beta + j, b);
#pragma unroll
            for (int i = 0; i < V; i++) a[i] = (a[i] - mean) * rstd * g[i] + b[i];
        } else {
#pragma unroll
            for (int i = 0; i < V; i++) a[i] = a[i] * rstd * g[i];
        }
        store<V>(y + at + j, a);
    }
    if (threadIdx.x == 0) {
        if constexpr (Centered) mean_out[blockIdx.x] = mean;
        rstd_out[blockIdx.x] = rstd;
    }
}

// Backward of both outputs into d(x + r), which is the gradient of x and, without dropout, of r (with dropout, r's is
// d(x + r) times the forward's dropout factors, into dr), one block per row: with
// x̂ = (s - mean)·rstd (RMSNorm: mean 0) and g = dy·gamma, ds_total = rstd·(g - mean(g) - x̂·mean(g·x̂)) + ds for LayerNorm
// and rstd·(g - x̂·mean(g·x̂)) + ds for RMSNorm (libtorch's norm backward for the input, plus the gradient that arrived
// on s as the next residual), rounded once.
template <int V, bool Centered> __device__ void add_norm_backward(const bf16* __restrict__ dy, const bf16* __restrict__ ds,
                                                                  const bf16* __restrict__ s, const bf16* __restrict__ gamma,
                                                                  const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                                                  bf16* __restrict__ dsum, bf16* __restrict__ dr, i64 h, float p,
                                                                  float scale, unsigned long long seed)
{
    __shared__ float shared[32];
    i64 at = (i64)blockIdx.x * h, step = (i64)blockDim.x * V;
    float mean = Centered ? mean_in[blockIdx.x] : 0.0f, rstd = rstd_in[blockIdx.x], sum_g = 0.0f, sum_gx = 0.0f;
    for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
        float d[V], a[V], g[V];
        load<V>(dy + at + j, d);
        load<V>(s + at + j, a);
        load<V>(gamma + j, g);
#pragma unroll
        for (int i = 0; i < V; i++) {
            float gi = d[i] * g[i];
            sum_g += gi;
            sum_gx += gi * (a[i] - mean) * rstd;
        }
    }
    float mean_g = Centered ? block_sum(sum_g, shared) / (float)h : 0.0f;
    float mean_gx = block_sum(sum_gx, shared) / (float)h;
    for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
        float d[V], a[V], g[V], e[V];
        load<V>(dy + at + j, d);
        load<V>(s + at + j, a);
        load<V>(gamma + j, g);
        load<V>(ds + at + j, e);
#pragma unroll
        for (int i = 0; i < V; i++) e[i] += rstd * (d[i] * g[i] - mean_g - (a[i] - mean) * rstd * mean_gx);
        store<V>(dsum + at + j, e);
        if (p > 0.0f) {
            // r's gradient through dropout: the bf16 d(x + r) times the forward's factors, regenerated.
            float f[V];
            dropout_factors<V>(at + j, seed, p, scale, f);
#pragma unroll
            for (int i = 0; i < V; i++) e[i] = to_float(to_bf16(e[i])) * f[i];
            store<V>(dr + at + j, e);
        }
    }
}

// The weight and bias gradients, d gamma = Σ_rows dy·x̂ and d beta = Σ_rows dy (LayerNorm only), in two stages without
// atomics (the order of the sums is fixed, so they are reproducible): blocks of `columns` threads, each block one column
// slab of one part of the rows, write float32 partial sums [parts, h]; the second kernel adds a column's parts and rounds
// once.
template <bool Centered> __device__ void norm_weight_grad_partial(const bf16* __restrict__ dy, const bf16* __restrict__ s,
                                                                  const float* __restrict__ mean, const float* __restrict__ rstd,
                                                                  float* __restrict__ partial_gamma, float* __restrict__ partial_beta,
                                                                  i64 rows, i64 h, i64 rows_per_part, i64 column_blocks)
{
    i64 part = blockIdx.x / column_blocks, column = (blockIdx.x % column_blocks) * blockDim.x + threadIdx.x;
    if (column >= h) return;
    i64 first = part * rows_per_part, last = first + rows_per_part < rows ? first + rows_per_part : rows;
    float g = 0.0f, b = 0.0f;
    for (i64 row = first; row < last; row++) {
        float d = to_float(dy[row * h + column]);
        g += d * (to_float(s[row * h + column]) - (Centered ? mean[row] : 0.0f)) * rstd[row];
        b += d;
    }
    partial_gamma[part * h + column] = g;
    if constexpr (Centered) partial_beta[part * h + column] = b;
}

template <bool Centered> __device__ void norm_weight_grad_final(const float* __restrict__ partial_gamma, const float* __restrict__ partial_beta,
                                                                bf16* __restrict__ dgamma, bf16* __restrict__ dbeta, i64 parts, i64 h)
{
    i64 column = first_index();
    if (column >= h) return;
    float g = 0.0f, b = 0.0f;
    for (i64 part = 0; part < parts; part++) {
        g += partial_gamma[part * h + column];
        if constexpr (Centered) b += partial_beta[part * h + column];
    }
    dgamma[column] = to_bf16(g);
    if constexpr (Centered) dbeta[column] = to_bf16(b);
}
