// The GPT path's fused CUDA kernels (GptKernels.cs), a module of their own so that the Llama path's kernels (kernels.cu)
// run whether or not these compile. bf16.cuh precedes this source. All are bandwidth-bound: the gain is the bytes not moved.

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

// ---- Residual add fused with LayerNorm (Ba et al. 2016): s = x + r, y = (s - mean) * rstd * gamma + beta. ----
// One block per row of h. The sum is rounded to bf16 before the statistics are taken, as the unfused path normalizes
// the bf16 sum it stored; mean and rstd = 1 / sqrt(biased variance + eps) are kept in float32 for backward, as libtorch's
// layer_norm keeps them. The row is read once from HBM: the second and third passes read back this thread's own writes
// of s (in cache: a row is a few KB). Variance by two passes (sum of squared deviations from the mean), not E[s²] - mean².

template <int V> __device__ void add_layer_norm_forward(const bf16* __restrict__ x, const bf16* __restrict__ r,
                                                        const bf16* __restrict__ gamma, const bf16* __restrict__ beta,
                                                        bf16* s, bf16* __restrict__ y, float* __restrict__ mean_out,
                                                        float* __restrict__ rstd_out, i64 h, float eps)
{
    __shared__ float shared[32];
    i64 at = (i64)blockIdx.x * h, step = (i64)blockDim.x * V;
    float total = 0.0f;
    for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
        float a[V], b[V];
        load<V>(x + at + j, a);
        load<V>(r + at + j, b);
#pragma unroll
        for (int i = 0; i < V; i++) {
            a[i] = to_float(to_bf16(a[i] + b[i]));
            total += a[i];
        }
        store<V>(s + at + j, a);
    }
    float mean = block_sum(total, shared) / (float)h;
    float squares = 0.0f;
    for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
        float a[V];
        load<V>(s + at + j, a);
#pragma unroll
        for (int i = 0; i < V; i++) squares += (a[i] - mean) * (a[i] - mean);
    }
    float rstd = rsqrtf(block_sum(squares, shared) / (float)h + eps);
    for (i64 j = (i64)threadIdx.x * V; j < h; j += step) {
        float a[V], g[V], b[V];
        load<V>(s + at + j, a);
        load<V>(gamma + j, g);
        load<V>(beta + j, b);
#pragma unroll
        for (int i = 0; i < V; i++) a[i] = (a[i] - mean) * rstd * g[i] + b[i];
        store<V>(y + at + j, a);
    }
    if (threadIdx.x == 0) {
        mean_out[blockIdx.x] = mean;
        rstd_out[blockIdx.x] = rstd;
    }
}

// Backward of both outputs into d(x + r), which is the gradient of x and of r alike, one block per row:
// with x̂ = (s - mean)·rstd and g = dy·gamma, ds_total = rstd·(g - mean(g) - x̂·mean(g·x̂)) + ds (libtorch's
// layer_norm_backward for the input, plus the gradient that arrived on s as the next residual), rounded once.
template <int V> __device__ void add_layer_norm_backward(const bf16* __restrict__ dy, const bf16* __restrict__ ds,
                                                         const bf16* __restrict__ s, const bf16* __restrict__ gamma,
                                                         const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                                         bf16* __restrict__ dsum, i64 h)
{
    __shared__ float shared[32];
    i64 at = (i64)blockIdx.x * h, step = (i64)blockDim.x * V;
    float mean = mean_in[blockIdx.x], rstd = rstd_in[blockIdx.x], sum_g = 0.0f, sum_gx = 0.0f;
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
    float mean_g = block_sum(sum_g, shared) / (float)h;
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
    }
}

extern "C" __global__ void add_layer_norm_forward_v8(const bf16* x, const bf16* r, const bf16* gamma, const bf16* beta, bf16* s, bf16* y, float* mean, float* rstd, i64 h, float eps) { add_layer_norm_forward<8>(x, r, gamma, beta, s, y, mean, rstd, h, eps); }
extern "C" __global__ void add_layer_norm_forward_v1(const bf16* x, const bf16* r, const bf16* gamma, const bf16* beta, bf16* s, bf16* y, float* mean, float* rstd, i64 h, float eps) { add_layer_norm_forward<1>(x, r, gamma, beta, s, y, mean, rstd, h, eps); }
extern "C" __global__ void add_layer_norm_backward_v8(const bf16* dy, const bf16* ds, const bf16* s, const bf16* gamma, const float* mean, const float* rstd, bf16* dsum, i64 h) { add_layer_norm_backward<8>(dy, ds, s, gamma, mean, rstd, dsum, h); }
extern "C" __global__ void add_layer_norm_backward_v1(const bf16* dy, const bf16* ds, const bf16* s, const bf16* gamma, const float* mean, const float* rstd, bf16* dsum, i64 h) { add_layer_norm_backward<1>(dy, ds, s, gamma, mean, rstd, dsum, h); }

// The weight and bias gradients, d gamma = Σ_rows dy·x̂ and d beta = Σ_rows dy, in two stages without atomics (the
// order of the sums is fixed, so they are reproducible): blocks of `columns` threads, each block one column slab of one
// part of the rows, write float32 partial sums [parts, h]; the second kernel adds a column's parts and rounds once.
extern "C" __global__ void layer_norm_weight_grad_partial(const bf16* __restrict__ dy, const bf16* __restrict__ s,
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
        g += d * (to_float(s[row * h + column]) - mean[row]) * rstd[row];
        b += d;
    }
    partial_gamma[part * h + column] = g;
    partial_beta[part * h + column] = b;
}

extern "C" __global__ void layer_norm_weight_grad_final(const float* __restrict__ partial_gamma, const float* __restrict__ partial_beta,
                                                        bf16* __restrict__ dgamma, bf16* __restrict__ dbeta, i64 parts, i64 h)
{
    i64 column = first_index();
    if (column >= h) return;
    float g = 0.0f, b = 0.0f;
    for (i64 part = 0; part < parts; part++) {
        g += partial_gamma[part * h + column];
        b += partial_beta[part * h + column];
    }
    dgamma[column] = to_bf16(g);
    dbeta[column] = to_bf16(b);
}

// ---- Word embedding gather with the learned position embedding added, one pass. ----
// ids [tokens] index this rank's rows [vocab_start, vocab_start + vocab_count) of the table (Megatron's
// VocabParallelEmbedding): an id outside them gives a zero row, which the tensor-parallel all-reduce fills from the rank
// that holds it. position (null: none) is added at row position_ids[t % seq] (the sequence's positions: 0..seq-1, or a
// context-parallel rank's), rounded once, as the unfused bf16 add rounds it.
template <int V> __device__ void embedding_forward(const i64* __restrict__ ids, const bf16* __restrict__ word,
                                                   const bf16* __restrict__ position, const i64* __restrict__ position_ids,
                                                   bf16* __restrict__ out, i64 tokens, i64 seq, i64 h, i64 vocab_start,
                                                   i64 vocab_count)
{
    for (i64 u = first_index(), units = tokens * h / V; u < units; u += grid_stride()) {
        i64 e = u * V, t = e / h, j = e - t * h, id = ids[t] - vocab_start;
        float w[V];
        if (id >= 0 && id < vocab_count) load<V>(word + id * h + j, w);
        else {
#pragma unroll
            for (int i = 0; i < V; i++) w[i] = 0.0f;
        }
        if (position != nullptr) {
            float p[V];
            i64 row = position_ids[t % seq];
            load<V>(position + row * h + j, p);
#pragma unroll
            for (int i = 0; i < V; i++) w[i] += p[i];
        }
        store<V>(out + e, w);
    }
}

extern "C" __global__ void embedding_forward_v8(const i64* ids, const bf16* word, const bf16* position, const i64* position_ids, bf16* out, i64 tokens, i64 seq, i64 h, i64 vocab_start, i64 vocab_count) { embedding_forward<8>(ids, word, position, position_ids, out, tokens, seq, h, vocab_start, vocab_count); }
extern "C" __global__ void embedding_forward_v1(const i64* ids, const bf16* word, const bf16* position, const i64* position_ids, bf16* out, i64 tokens, i64 seq, i64 h, i64 vocab_start, i64 vocab_count) { embedding_forward<1>(ids, word, position, position_ids, out, tokens, seq, h, vocab_start, vocab_count); }
