// The residual add fused with LayerNorm (gpt_kernels.cu) and with RMSNorm (kernels.cu), with and without the dropout of r
// (Philox, checked against Random123's known answers first), and the embedding kernel, run on
// the CPU (cuda_on_cpu.h) against double-precision references: the arithmetic and the indexing of each kernel at the
// launch shapes AddNormKernels.cs and GptKernels.cs use (a row kernel's threads, the weight-gradient parts, both vector
// widths, a tensor-parallel shard's rows, positions given by ids). Built and run by GptKernelsTests with -I
// src/Executor/Fused; prints PASS/FAIL per check and exits 1 on a failure. Timing and the GPU's memory model are not
// checked here: `harness kernel-check` runs the same kernels on a GPU.
#include "cuda_on_cpu.h"
#include <algorithm>
#include <cstdio>
#include <random>
#include "bf16.cuh"
#include "add_norm.cuh"
#include "kernels.cu"
#include "gpt_kernels.cu"

static std::mt19937 rng(5);
static bf16 host_bf16(float f) { unsigned u = __float_as_uint(f); u += 0x7fffu + ((u >> 16) & 1u); return (bf16)(u >> 16); }
static float host_float(bf16 h) { return __uint_as_float(((unsigned)h) << 16); }
static std::vector<bf16> draw(size_t n, float scale, float shift = 0) {
    std::normal_distribution<float> d(0, 1); std::vector<bf16> v(n);
    for (auto& x : v) x = host_bf16(d(rng) * scale + shift); return v;
}
// AddNormKernels.RowThreads.
static int row_threads(long h, int v) { long t = (h / v + 31) / 32 * 32; return (int)std::clamp(t, 32L, 256L); }
static int failures = 0;
static void check(const char* what, double err, double tol) { printf("%s %s: %.3e (tol %.1e)\n", err <= tol ? "PASS" : "FAIL", what, err, tol); if (err > tol) failures++; }

// Element e's dropout factor, from its own Philox block (e / 4) and word (e mod 4), one element at a time: the reference
// for dropout_factors' vectorized walk over blocks.
static float factor(long e, unsigned long long seed, float p, float scale)
{
    uint4 b = philox4x32_10(make_uint4((unsigned)(e / 4), (unsigned)((unsigned long long)(e / 4) >> 32), 0, 0), (unsigned)seed, (unsigned)(seed >> 32));
    unsigned words[4] = {b.x, b.y, b.z, b.w};
    return (double)(words[e % 4] >> 8) / 16777216.0 >= p ? scale : 0.0f;
}

// LayerNorm (centered) or RMSNorm of x + dropout(r) (p = 0: x + r), forward and backward, with the weight (and bias) gradients.
static void add_norm(bool centered, long rows, long h, int v, long rows_per_part, float p = 0)
{
    const unsigned long long seed = 0xA1B2C3D40F1E2D3Cull;
    float scale = (float)(1.0 / (1.0 - p));
    auto x = draw(rows * h, 1), r = draw(rows * h, 0.5, 0.1), gamma = draw(h, 0.2, 1), beta = draw(h, 0.1), dy = draw(rows * h, 1), ds = draw(rows * h, 0.3);
    std::vector<bf16> s(rows * h), y(rows * h), dsum(rows * h), dr(rows * h), dgamma(h), dbeta(h);
    bf16* pdr = p > 0 ? dr.data() : nullptr;
    std::vector<float> mean(rows), rstd(rows);
    float eps = 1e-5f;
    long parts = (rows + rows_per_part - 1) / rows_per_part, column_blocks = (h + 255) / 256;
    std::vector<float> pg(parts * h), pb(parts * h);
    if (centered) {
        launch(rows, row_threads(h, v), [&] {
            if (v == 8) add_layer_norm_forward_v8(x.data(), r.data(), gamma.data(), beta.data(), s.data(), y.data(), mean.data(), rstd.data(), h, eps, p, scale, seed);
            else add_layer_norm_forward_v1(x.data(), r.data(), gamma.data(), beta.data(), s.data(), y.data(), mean.data(), rstd.data(), h, eps, p, scale, seed); });
        launch(rows, row_threads(h, v), [&] {
            if (v == 8) add_layer_norm_backward_v8(dy.data(), ds.data(), s.data(), gamma.data(), mean.data(), rstd.data(), dsum.data(), pdr, h, p, scale, seed);
            else add_layer_norm_backward_v1(dy.data(), ds.data(), s.data(), gamma.data(), mean.data(), rstd.data(), dsum.data(), pdr, h, p, scale, seed); });
        launch(parts * column_blocks, 256, [&] { layer_norm_weight_grad_partial(dy.data(), s.data(), mean.data(), rstd.data(), pg.data(), pb.data(), rows, h, rows_per_part, column_blocks); });
        launch((h + 255) / 256, 256, [&] { layer_norm_weight_grad_final(pg.data(), pb.data(), dgamma.data(), dbeta.data(), parts, h); });
    } else {
        launch(rows, row_threads(h, v), [&] {
            if (v == 8) add_rms_norm_forward_v8(x.data(), r.data(), gamma.data(), s.data(), y.data(), rstd.data(), h, eps, p, scale, seed);
            else add_rms_norm_forward_v1(x.data(), r.data(), gamma.data(), s.data(), y.data(), rstd.data(), h, eps, p, scale, seed); });
        launch(rows, row_threads(h, v), [&] {
            if (v == 8) add_rms_norm_backward_v8(dy.data(), ds.data(), s.data(), gamma.data(), rstd.data(), dsum.data(), pdr, h, p, scale, seed);
            else add_rms_norm_backward_v1(dy.data(), ds.data(), s.data(), gamma.data(), rstd.data(), dsum.data(), pdr, h, p, scale, seed); });
        launch(parts * column_blocks, 256, [&] { rms_norm_weight_grad_partial(dy.data(), s.data(), rstd.data(), pg.data(), rows, h, rows_per_part, column_blocks); });
        launch((h + 255) / 256, 256, [&] { rms_norm_weight_grad_final(pg.data(), dgamma.data(), parts, h); });
    }

    double sum_err = 0, y_err = 0, y_max = 0, dx_err = 0, dx_max = 0, stat_err = 0, dr_err = 0;
    long kept = 0;
    std::vector<double> g_ref(h), b_ref(h);
    for (long i = 0; i < rows; i++) {
        std::vector<double> a(h);
        double m = 0, var = 0;
        for (long j = 0; j < h; j++) {
            float f = p > 0 ? factor(i * h + j, seed, p, scale) : 1.0f;
            kept += f != 0;
            // The dropped r rounded to bf16, then the add (libtorch's dropout, then its add).
            bf16 expect = host_bf16(host_float(x[i * h + j]) + host_float(host_bf16(host_float(r[i * h + j]) * f)));
            if (p > 0) dr_err = std::max(dr_err, (double)std::fabs(host_float(host_bf16(host_float(dsum[i * h + j]) * f)) - host_float(dr[i * h + j])));
            sum_err = std::max(sum_err, (double)std::fabs(host_float(expect) - host_float(s[i * h + j])));
            a[j] = host_float(expect); m += a[j];
        }
        m = centered ? m / h : 0;
        for (long j = 0; j < h; j++) var += (a[j] - m) * (a[j] - m);
        double rs = 1 / std::sqrt(var / h + eps);
        stat_err = std::max({stat_err, centered ? std::fabs(m - mean[i]) : 0.0, std::fabs(rs - rstd[i]) / rs});
        double mg = 0, mgx = 0;
        for (long j = 0; j < h; j++) {
            double xh = (a[j] - m) * rs, ref = xh * host_float(gamma[j]) + (centered ? host_float(beta[j]) : 0.0);
            y_err = std::max(y_err, std::fabs(ref - host_float(y[i * h + j]))); y_max = std::max(y_max, std::fabs(ref));
            double g = host_float(dy[i * h + j]) * host_float(gamma[j]); mg += g; mgx += g * xh;
            g_ref[j] += host_float(dy[i * h + j]) * xh; b_ref[j] += host_float(dy[i * h + j]);
        }
        mg = centered ? mg / h : 0; mgx /= h;
        for (long j = 0; j < h; j++) {
            double xh = (a[j] - m) * rs, g = host_float(dy[i * h + j]) * host_float(gamma[j]);
            double ref = rs * (g - mg - xh * mgx) + host_float(ds[i * h + j]);
            dx_err = std::max(dx_err, std::fabs(ref - host_float(dsum[i * h + j]))); dx_max = std::max(dx_max, std::fabs(ref));
        }
    }
    double wg_err = 0, wg_max = 0;
    for (long j = 0; j < h; j++) {
        wg_err = std::max({wg_err, std::fabs(g_ref[j] - host_float(dgamma[j])), centered ? std::fabs(b_ref[j] - host_float(dbeta[j])) : 0.0});
        wg_max = std::max({wg_max, std::fabs(g_ref[j]), centered ? std::fabs(b_ref[j]) : 0.0});
    }
    printf("-- add+%s rows %ld h %ld v%d (%d threads, %ld parts), dropout %g\n", centered ? "layernorm" : "rmsnorm", rows, h, v, row_threads(h, v), parts, p);
    check("sum bit-exact", sum_err, 0);
    if (p > 0) {
        check("d r = d(x + r) through the mask, bit-exact", dr_err, 0);
        // Some dropped and some kept, at these few elements (the rate itself: PhiloxTests over a million).
        check("the mask drops some and keeps some", kept > 0 && kept < rows * h ? 0 : 1, 0);
    }
    check(centered ? "mean, rstd" : "rstd", stat_err, 1e-5);
    // Rounded once to bf16: within 2^-8 of the largest value, plus float32 arithmetic (KernelCheck's tolerance, 2^-7).
    check("normalized (scaled)", y_err / y_max, 2.0 / 256);
    check("d(x + r) (scaled)", dx_err / dx_max, 2.0 / 256);
    check(centered ? "d gamma, d beta (scaled)" : "d gamma (scaled)", wg_err / wg_max, 2.0 / 256);
}

// max_blocks below the tokens' need makes the grid-stride loop take more than one pass, as the GPU's grid cap (65536
// blocks) does for large tensors.
static void embedding(long batch, long seq, long h, int v, long vocab_start, long vocab_count, bool positions, long max_blocks = 1L << 16)
{
    long tokens = batch * seq, table = 40;
    auto word = draw(vocab_count * h, 0.02), position = draw(2 * seq * h, 0.01);
    std::vector<i64> ids(tokens), pos_ids(seq);
    std::uniform_int_distribution<i64> id(0, table - 1);
    for (auto& i : ids) i = id(rng);
    for (long p = 0; p < seq; p++) pos_ids[p] = (p * 7 + 3) % (2 * seq);
    std::vector<bf16> out(tokens * h, 0xffff);
    unsigned blocks = (unsigned)std::min(max_blocks, std::max(1L, (tokens * h / v + 255) / 256));
    launch(blocks, 256, [&] {
        const bf16* pp = positions ? position.data() : nullptr; const i64* pi = positions ? pos_ids.data() : nullptr;
        if (v == 8) embedding_forward_v8(ids.data(), word.data(), pp, pi, out.data(), tokens, seq, h, vocab_start, vocab_count);
        else embedding_forward_v1(ids.data(), word.data(), pp, pi, out.data(), tokens, seq, h, vocab_start, vocab_count); });
    double err = 0;
    for (long t = 0; t < tokens; t++)
        for (long j = 0; j < h; j++) {
            long local = ids[t] - vocab_start;
            float w = local >= 0 && local < vocab_count ? host_float(word[local * h + j]) : 0.0f;
            if (positions) w += host_float(position[pos_ids[t % seq] * h + j]);
            err = std::max(err, (double)std::fabs(host_float(host_bf16(w)) - host_float(out[t * h + j])));
        }
    printf("-- embedding [%ld x %ld] h %ld v%d rows [%ld, %ld) positions %d, %u blocks\n", batch, seq, h, v, vocab_start, vocab_start + vocab_count, positions, blocks);
    check("output bit-exact", err, 0);
}

int main()
{
    // Random123's known-answer vectors for philox4x32-10 (tests/kat_vectors of DEShawResearch/random123).
    uint4 z = philox4x32_10(make_uint4(0, 0, 0, 0), 0, 0), o = philox4x32_10(make_uint4(~0u, ~0u, ~0u, ~0u), ~0u, ~0u),
          pi = philox4x32_10(make_uint4(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u), 0xa4093822u, 0x299f31d0u);
    check("philox4x32-10 known answers", !(z.x == 0x6627e8d5u && z.y == 0xe169c58du && z.z == 0xbc57ac4cu && z.w == 0x9b00dbd8u &&
        o.x == 0x408f276du && o.y == 0x41c83b0eu && o.z == 0xa20bc7c6u && o.w == 0x6d5451fdu &&
        pi.x == 0xd16cfe09u && pi.y == 0x94fdccebu && pi.z == 0x5001e420u && pi.w == 0x24126ea1u), 0);
    for (bool centered : {true, false}) {
        add_norm(centered, 6, 1280, 8, 4, 0.1f);
        add_norm(centered, 5, 1283, 1, 2, 0.1f);
        add_norm(centered, 3, 2304, 8, 2, 0.5f);
        add_norm(centered, 6, 1280, 8, 4);
        add_norm(centered, 5, 1283, 1, 2);
        add_norm(centered, 3, 16, 8, 1);
        add_norm(centered, 3, 2304, 8, 2);    // a row longer than 256 threads x 8: the threads loop
        add_norm(centered, 4, 64, 8, 3);      // one warp, most lanes idle
        add_norm(centered, 7, 20, 1, 3);      // the weight-gradient parts ragged (the last one row)
    }
    embedding(2, 7, 16, 8, 0, 40, true);
    embedding(2, 7, 16, 8, 20, 20, false);
    embedding(3, 5, 5, 1, 10, 15, true);
    embedding(3, 9, 24, 8, 0, 40, true, 3);     // grid-stride: 3 blocks for more elements than they cover
    embedding(3, 9, 23, 1, 0, 40, true, 3);
    embedding(3, 9, 24, 8, 20, 20, false, 3);
    printf(failures ? "%d FAILED\n" : "all passed\n", failures);
    return failures != 0;
}
