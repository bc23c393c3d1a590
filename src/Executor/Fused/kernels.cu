// The executor's fused CUDA kernels, compiled at run time by NVRTC (src/Executor/Native/Cuda) for the GPU at hand.
// Each replaces a chain of libtorch kernels that would each make a full pass over HBM; all are bandwidth-bound,
// so the gain is the bytes not moved. bf16 is handled as its bit pattern (no headers needed); arithmetic is float32.
// The helpers they share (bf16, vector loads and stores, grid-stride loops) are in bf16.cuh, and the residual add fused
// with a norm in add_norm.cuh; both precede this source.

// ---- SwiGLU (Shazeer 2020): x = [gate | up] along the last dimension (f each), y = silu(gate) * up. ----

template <int V> __device__ void swiglu_forward(const bf16* __restrict__ x, bf16* __restrict__ y, i64 rows, i64 f)
{
    for (i64 u = first_index(), units = rows * f / V; u < units; u += grid_stride()) {
        i64 e = u * V, row = e / f, col = e - row * f;
        const bf16* gate = x + row * 2 * f + col;
        float g[V], up[V], out[V];
        load<V>(gate, g);
        load<V>(gate + f, up);
#pragma unroll
        for (int i = 0; i < V; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * up[i];
        store<V>(y + e, out);
    }
}

// d gate = dy * up * s * (1 + gate * (1 - s)), d up = dy * silu(gate), s = sigmoid(gate).
template <int V> __device__ void swiglu_backward(const bf16* __restrict__ dy, const bf16* __restrict__ x, bf16* __restrict__ dx, i64 rows, i64 f)
{
    for (i64 u = first_index(), units = rows * f / V; u < units; u += grid_stride()) {
        i64 e = u * V, row = e / f, col = e - row * f, at = row * 2 * f + col;
        float d[V], g[V], up[V], dg[V], du[V];
        load<V>(dy + e, d);
        load<V>(x + at, g);
        load<V>(x + at + f, up);
#pragma unroll
        for (int i = 0; i < V; i++) {
            float s = 1.0f / (1.0f + expf(-g[i]));
            dg[i] = d[i] * up[i] * s * (1.0f + g[i] * (1.0f - s));
            du[i] = d[i] * g[i] * s;
        }
        store<V>(dx + at, dg);
        store<V>(dx + at + f, du);
    }
}

extern "C" __global__ void swiglu_forward_v8(const bf16* x, bf16* y, i64 rows, i64 f) { swiglu_forward<8>(x, y, rows, f); }
extern "C" __global__ void swiglu_forward_v1(const bf16* x, bf16* y, i64 rows, i64 f) { swiglu_forward<1>(x, y, rows, f); }
extern "C" __global__ void swiglu_backward_v8(const bf16* dy, const bf16* x, bf16* dx, i64 rows, i64 f) { swiglu_backward<8>(dy, x, dx, rows, f); }
extern "C" __global__ void swiglu_backward_v1(const bf16* dy, const bf16* x, bf16* dx, i64 rows, i64 f) { swiglu_backward<1>(dy, x, dx, rows, f); }

// ---- The residual add fused with RMSNorm (add_norm.cuh, which precedes this source with bf16.cuh): no mean, no bias. ----

extern "C" __global__ void add_rms_norm_forward_v8(const bf16* x, const bf16* r, const bf16* gamma, bf16* s, bf16* y, float* rstd, i64 h, float eps, float p, float scale, unsigned long long seed) { add_norm_forward<8, false>(x, r, gamma, nullptr, s, y, nullptr, rstd, h, eps, p, scale, seed); }
extern "C" __global__ void add_rms_norm_forward_v1(const bf16* x, const bf16* r, const bf16* gamma, bf16* s, bf16* y, float* rstd, i64 h, float eps, float p, float scale, unsigned long long seed) { add_norm_forward<1, false>(x, r, gamma, nullptr, s, y, nullptr, rstd, h, eps, p, scale, seed); }
extern "C" __global__ void add_rms_norm_backward_v8(const bf16* dy, const bf16* ds, const bf16* s, const bf16* gamma, const float* rstd, bf16* dsum, bf16* dr, i64 h, float p, float scale, unsigned long long seed) { add_norm_backward<8, false>(dy, ds, s, gamma, nullptr, rstd, dsum, dr, h, p, scale, seed); }
extern "C" __global__ void add_rms_norm_backward_v1(const bf16* dy, const bf16* ds, const bf16* s, const bf16* gamma, const float* rstd, bf16* dsum, bf16* dr, i64 h, float p, float scale, unsigned long long seed) { add_norm_backward<1, false>(dy, ds, s, gamma, nullptr, rstd, dsum, dr, h, p, scale, seed); }
extern "C" __global__ void rms_norm_weight_grad_partial(const bf16* dy, const bf16* s, const float* rstd, float* partial_gamma, i64 rows, i64 h, i64 rows_per_part, i64 column_blocks) { norm_weight_grad_partial<false>(dy, s, nullptr, rstd, partial_gamma, nullptr, rows, h, rows_per_part, column_blocks); }
extern "C" __global__ void rms_norm_weight_grad_final(const float* partial_gamma, bf16* dgamma, i64 parts, i64 h) { norm_weight_grad_final<false>(partial_gamma, nullptr, dgamma, nullptr, parts, h); }

// ---- Cross-entropy over bf16 logits [rows, vocab] in float32, one block per row. ----
// Forward: log-sum-exp in one pass (online softmax: Milakov and Gimelshein 2018), loss = lse - logit[label].
// Backward: d logit = (exp(logit - lse) - [j == label]) * d loss. No float32 copy of the logits is ever made.

__device__ __forceinline__ float negative_infinity() { return __int_as_float((int)0xff800000u); }

// (m, s) stands for s * exp(m): merge two partial sums of exponentials.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2)
{
    float top = fmaxf(m, m2);
    if (top == negative_infinity()) return;
    s = s * expf(m - top) + s2 * expf(m2 - top);
    m = top;
}

__device__ __forceinline__ void warp_merge(float& m, float& s)
{
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        merge(m, s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
}

template <int V> __device__ void cross_entropy_forward(const bf16* __restrict__ logits, const i64* __restrict__ labels,
                                                       float* __restrict__ loss, float* __restrict__ lse, i64 vocab)
{
    __shared__ float shared_m[32], shared_s[32];
    const bf16* x = logits + (i64)blockIdx.x * vocab;
    float m = negative_infinity(), s = 0.0f;
    for (i64 j = (i64)threadIdx.x * V; j < vocab; j += (i64)blockDim.x * V) {
        float v[V];
        load<V>(x + j, v);
        float top = v[0];
#pragma unroll
        for (int i = 1; i < V; i++) top = fmaxf(top, v[i]);
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < V; i++) sum += expf(v[i] - top);
        merge(m, s, top, sum);
    }
    warp_merge(m, s);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) { shared_m[warp] = m; shared_s[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        m = lane < warps ? shared_m[lane] : negative_infinity();
        s = lane < warps ? shared_s[lane] : 0.0f;
        warp_merge(m, s);
        if (lane == 0) {
            float l = m + logf(s);
            lse[blockIdx.x] = l;
            loss[blockIdx.x] = l - to_float(x[labels[blockIdx.x]]);
        }
    }
}

template <int V> __device__ void cross_entropy_backward(const bf16* __restrict__ logits, const i64* __restrict__ labels,
                                                        const float* __restrict__ lse, const float* __restrict__ dloss,
                                                        bf16* __restrict__ dlogits, i64 vocab)
{
    i64 row = blockIdx.x, label = labels[row];
    float l = lse[row], d = dloss[row];
    const bf16* x = logits + row * vocab;
    bf16* dx = dlogits + row * vocab;
    for (i64 j = (i64)threadIdx.x * V; j < vocab; j += (i64)blockDim.x * V) {
        float v[V];
        load<V>(x + j, v);
#pragma unroll
        for (int i = 0; i < V; i++) v[i] = (expf(v[i] - l) - (j + i == label ? 1.0f : 0.0f)) * d;
        store<V>(dx + j, v);
    }
}

extern "C" __global__ void cross_entropy_forward_v8(const bf16* x, const i64* labels, float* loss, float* lse, i64 vocab) { cross_entropy_forward<8>(x, labels, loss, lse, vocab); }
extern "C" __global__ void cross_entropy_forward_v1(const bf16* x, const i64* labels, float* loss, float* lse, i64 vocab) { cross_entropy_forward<1>(x, labels, loss, lse, vocab); }
extern "C" __global__ void cross_entropy_backward_v8(const bf16* x, const i64* labels, const float* lse, const float* dloss, bf16* dx, i64 vocab) { cross_entropy_backward<8>(x, labels, lse, dloss, dx, vocab); }
extern "C" __global__ void cross_entropy_backward_v1(const bf16* x, const i64* labels, const float* lse, const float* dloss, bf16* dx, i64 vocab) { cross_entropy_backward<1>(x, labels, lse, dloss, dx, vocab); }

// ---- AdamW (Loshchilov and Hutter 2019) with global-norm clipping, one pass over the flat float32 buffers. ----
// The same arithmetic as the reference path in Optimizer/AdamW.cs (clip, decay, lerp, addcmul, sqrt, addcdiv),
// and, when param is not null, the cast of the new master weights into the bf16 model weights.
extern "C" __global__ void adamw_step(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                                      bf16* __restrict__ param, i64 n, i64 decayed, const float* __restrict__ norm, float clip,
                                      float decay_factor, float one_minus_beta1, float beta2, float one_minus_beta2,
                                      float inv_sqrt_bias2, float eps, float step_size)
{
    float coefficient = 1.0f;
    if (clip > 0.0f) coefficient = fminf(clip / (*norm + 1e-6f), 1.0f);
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        float gi = g[i] * coefficient, wi = w[i], mi = m[i];
        if (i < decayed) wi *= decay_factor;
        mi = mi + one_minus_beta1 * (gi - mi);
        float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
        wi = wi + step_size * (mi / (sqrtf(vi) * inv_sqrt_bias2 + eps));
        w[i] = wi;
        m[i] = mi;
        v[i] = vi;
        if (param != nullptr) param[i] = to_bf16(wi);
    }
}

// ---- The QKV projection's split with rotary positions (Su et al. 2021, rotate-half), one pass each way. ----
// projected [tokens = b·s, groups, hpg + 2, d] holds per key/value group its hpg query heads, its key, its value
// (Megatron's layout). Forward writes q [tokens, groups·hpg, d], k and v [tokens, groups, d], contiguous: the
// [b, s, heads, d] layout attention reads. q and k are rotated: y = x·cos + rotate(x)·sin± with rotate(x) = [x2 | x1]
// and sin± = [-sin | sin] (the tables' rows are positions 0..s-1, d entries each). Backward applies the transposed
// rotation to dq and dk (read through their strides, as attention's backward leaves them) and writes the whole
// gradient of the projection, dv included, in one pass: no split/cat copies, no transposes made contiguous.

struct Strided { const bf16* p; i64 b, s, n; };  // element (b, s, n, i) at p[b·b + s·s + n·n + i]

// Unit u covers V consecutive channels of the first half of one slot (and the V matching ones of the second half).
__device__ __forceinline__ void qkv_indices(i64 u, i64 chunks, i64 slots, i64 groups, i64& c, i64& j, i64& g, i64& t)
{
    c = u % chunks; u /= chunks;
    j = u % slots; u /= slots;
    g = u % groups;
    t = u / groups;
}

// cos and sin± of V channels from `at` (a position's row plus a channel) and of their partners half a head further.
template <int V> __device__ __forceinline__ void load_angles(const bf16* cos_table, const bf16* sin_table, i64 at, i64 half,
                                                             float* c1, float* c2, float* s1, float* s2)
{
    load<V>(cos_table + at, c1);
    load<V>(cos_table + at + half, c2);
    load<V>(sin_table + at, s1);
    load<V>(sin_table + at + half, s2);
}

template <int V> __device__ void qkv_rotary_forward(const bf16* __restrict__ projected, const bf16* __restrict__ cos_table,
                                                    const bf16* __restrict__ sin_table, bf16* __restrict__ q, bf16* __restrict__ k,
                                                    bf16* __restrict__ v, i64 tokens, i64 seq, i64 groups, i64 hpg, i64 d)
{
    i64 half = d / 2, chunks = half / V, slots = hpg + 2;
    for (i64 u = first_index(), n = tokens * groups * slots * chunks; u < n; u += grid_stride()) {
        i64 c, j, g, t;
        qkv_indices(u, chunks, slots, groups, c, j, g, t);
        i64 i = c * V;
        const bf16* x = projected + ((t * groups + g) * slots + j) * d;
        float x1[V], x2[V];
        load<V>(x + i, x1);
        load<V>(x + i + half, x2);
        if (j == hpg + 1) {  // the value: copied (bf16 -> float -> bf16 is exact)
            bf16* out = v + (t * groups + g) * d;
            store<V>(out + i, x1);
            store<V>(out + i + half, x2);
            continue;
        }
        float c1[V], c2[V], s1[V], s2[V], y1[V], y2[V];
        load_angles<V>(cos_table, sin_table, (t % seq) * d + i, half, c1, c2, s1, s2);
#pragma unroll
        for (int e = 0; e < V; e++) {
            y1[e] = x1[e] * c1[e] + x2[e] * s1[e];
            y2[e] = x2[e] * c2[e] + x1[e] * s2[e];
        }
        bf16* out = j < hpg ? q + ((t * groups + g) * hpg + j) * d : k + (t * groups + g) * d;
        store<V>(out + i, y1);
        store<V>(out + i + half, y2);
    }
}

template <int V> __device__ void qkv_rotary_backward(Strided dq, Strided dk, Strided dv, const bf16* __restrict__ cos_table,
                                                     const bf16* __restrict__ sin_table, bf16* __restrict__ dprojected,
                                                     i64 tokens, i64 seq, i64 groups, i64 hpg, i64 d)
{
    i64 half = d / 2, chunks = half / V, slots = hpg + 2;
    for (i64 u = first_index(), n = tokens * groups * slots * chunks; u < n; u += grid_stride()) {
        i64 c, j, g, t;
        qkv_indices(u, chunks, slots, groups, c, j, g, t);
        i64 i = c * V, b = t / seq, s = t % seq;
        const Strided& src = j < hpg ? dq : (j == hpg ? dk : dv);
        const bf16* dy = src.p + b * src.b + s * src.s + (j < hpg ? g * hpg + j : g) * src.n;
        bf16* dx = dprojected + ((t * groups + g) * slots + j) * d;
        float dy1[V], dy2[V];
        load<V>(dy + i, dy1);
        load<V>(dy + i + half, dy2);
        if (j == hpg + 1) {
            store<V>(dx + i, dy1);
            store<V>(dx + i + half, dy2);
            continue;
        }
        float c1[V], c2[V], s1[V], s2[V], dx1[V], dx2[V];
        load_angles<V>(cos_table, sin_table, s * d + i, half, c1, c2, s1, s2);
#pragma unroll
        for (int e = 0; e < V; e++) {  // the transpose of y1 = c1·x1 + s1·x2, y2 = c2·x2 + s2·x1
            dx1[e] = dy1[e] * c1[e] + dy2[e] * s2[e];
            dx2[e] = dy1[e] * s1[e] + dy2[e] * c2[e];
        }
        store<V>(dx + i, dx1);
        store<V>(dx + i + half, dx2);
    }
}

extern "C" __global__ void qkv_rotary_forward_v8(const bf16* x, const bf16* c, const bf16* sn, bf16* q, bf16* k, bf16* v, i64 tokens, i64 seq, i64 groups, i64 hpg, i64 d) { qkv_rotary_forward<8>(x, c, sn, q, k, v, tokens, seq, groups, hpg, d); }
extern "C" __global__ void qkv_rotary_forward_v1(const bf16* x, const bf16* c, const bf16* sn, bf16* q, bf16* k, bf16* v, i64 tokens, i64 seq, i64 groups, i64 hpg, i64 d) { qkv_rotary_forward<1>(x, c, sn, q, k, v, tokens, seq, groups, hpg, d); }
extern "C" __global__ void qkv_rotary_backward_v8(Strided dq, Strided dk, Strided dv, const bf16* c, const bf16* sn, bf16* dx, i64 tokens, i64 seq, i64 groups, i64 hpg, i64 d) { qkv_rotary_backward<8>(dq, dk, dv, c, sn, dx, tokens, seq, groups, hpg, d); }
extern "C" __global__ void qkv_rotary_backward_v1(Strided dq, Strided dk, Strided dv, const bf16* c, const bf16* sn, bf16* dx, i64 tokens, i64 seq, i64 groups, i64 hpg, i64 d) { qkv_rotary_backward<1>(dq, dk, dv, c, sn, dx, tokens, seq, groups, hpg, d); }
