// CUDA's execution model on the CPU, enough for the kernels' modules (kernels.cu, gpt_kernels.cu): one std::thread per CUDA thread, blocks one after another
// (so __shared__ can be a static), __syncthreads a barrier of the block, and __shfl_xor_sync through an exchange array
// between two barriers, which holds because every thread of a block calls it at the same point (block_sum, warp_sum).
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
#define __device__
#define __global__
#define __shared__ static
#define __forceinline__ inline
#define __restrict__
#define __align__(n) alignas(n)
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static std::barrier<>* block_barrier;
static float exchange[1024];
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int offset)
{
    exchange[threadIdx.x] = v;
    __syncthreads();
    float r = exchange[threadIdx.x ^ offset];
    __syncthreads();
    return r;
}
inline void launch(unsigned blocks, unsigned threads, const std::function<void()>& kernel)
{
    gridDim.x = blocks; blockDim.x = threads;
    for (unsigned b = 0; b < blocks; b++) {
        std::barrier<> bar(threads);
        block_barrier = &bar;
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; t++)
            pool.emplace_back([&, b, t] { blockIdx.x = b; threadIdx.x = t; kernel(); });
        for (auto& th : pool) th.join();
    }
}
