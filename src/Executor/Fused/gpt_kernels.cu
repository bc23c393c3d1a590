// The GPT path's fused CUDA kernels (GptKernels.cs), a module of their own so that the Llama path's kernels (kernels.cu)
// run whether or not these compile. bf16.cuh and add_norm.cuh precede this source. All are bandwidth-bound: the gain is
// the bytes not moved.

// The residual add fused with LayerNorm (add_norm.cuh, which precedes this source with bf16.cuh).
extern "C" __global__ void add_layer_norm_forward_v8(const bf16* x, const bf16* r, const bf16* gamma, const bf16* beta, bf16* s, bf16* y, float* mean, float* rstd, i64 h, float eps, float p, float scale, unsigned long long seed) { add_norm_forward<8, true>(x, r, gamma, beta, s, y, mean, rstd, h, eps, p, scale, seed); }
extern "C" __global__ void add_layer_norm_forward_v1(const bf16* x, const bf16* r, const bf16* gamma, const bf16* beta, bf16* s, bf16* y, float* mean, float* rstd, i64 h, float eps, float p, float scale, unsigned long long seed) { add_norm_forward<1, true>(x, r, gamma, beta, s, y, mean, rstd, h, eps, p, scale, seed); }
extern "C" __global__ void add_layer_norm_backward_v8(const bf16* dy, const bf16* ds, const bf16* s, const bf16* gamma, const float* mean, const float* rstd, bf16* dsum, bf16* dr, i64 h, float p, float scale, unsigned long long seed) { add_norm_backward<8, true>(dy, ds, s, gamma, mean, rstd, dsum, dr, h, p, scale, seed); }
extern "C" __global__ void add_layer_norm_backward_v1(const bf16* dy, const bf16* ds, const bf16* s, const bf16* gamma, const float* mean, const float* rstd, bf16* dsum, bf16* dr, i64 h, float p, float scale, unsigned long long seed) { add_norm_backward<1, true>(dy, ds, s, gamma, mean, rstd, dsum, dr, h, p, scale, seed); }
extern "C" __global__ void layer_norm_weight_grad_partial(const bf16* dy, const bf16* s, const float* mean, const float* rstd, float* partial_gamma, float* partial_beta, i64 rows, i64 h, i64 rows_per_part, i64 column_blocks) { norm_weight_grad_partial<true>(dy, s, mean, rstd, partial_gamma, partial_beta, rows, h, rows_per_part, column_blocks); }
extern "C" __global__ void layer_norm_weight_grad_final(const float* partial_gamma, const float* partial_beta, bf16* dgamma, bf16* dbeta, i64 parts, i64 h) { norm_weight_grad_final<true>(partial_gamma, partial_beta, dgamma, dbeta, parts, h); }

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
