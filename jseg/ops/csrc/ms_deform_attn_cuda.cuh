// Multi-scale deformable attention: CUDA kernels, launched from the jt.code
// cuda_src of jseg/ops/ms_deform_attn_kernel.py.
//
// forward:  one thread per output element (b, q, head, d), summing over levels
//           and points (as mmcv's im2col kernel).
// backward: one warp per sample (b, q, head, level, point); its lanes stride over
//           the D channels, so value reads and the atomicAdd into grad_value are
//           coalesced; the location and weight gradients are reduced across the
//           warp with shuffles and written by lane 0 (every sample is written,
//           so those two outputs need no zeroing). grad_value is zeroed by a
//           separate kernel first.
#ifndef JSEG_MS_DEFORM_ATTN_CUDA_CUH
#define JSEG_MS_DEFORM_ATTN_CUDA_CUH

#include "ms_deform_attn_common.h"

namespace jseg_msda {

constexpr int THREADS = 256;
constexpr int WARP = 32;

template <class T>
__global__ void cuda_forward_kernel(const T* __restrict__ value, const T* __restrict__ loc,
                                    const T* __restrict__ attn, T* __restrict__ out, idx_t B, idx_t S,
                                    idx_t nH, idx_t D, idx_t Lq, idx_t P, Levels levels) {
    const idx_t total = B * Lq * nH * D, L = levels.count;
    for (idx_t i = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; i < total; i += (idx_t)gridDim.x * blockDim.x) {
        const idx_t d = i % D, bqh = i / D, h = bqh % nH, b = bqh / (nH * Lq);
        T acc = T(0);
        for (idx_t l = 0; l < L; l++) {
            const int height = levels.height[l], width = levels.width[l];
            const T* v = value + value_offset(b, levels.start[l], h, S, nH, D) + d;
            for (idx_t p = 0; p < P; p++) {
                const idx_t n = (bqh * L + l) * P + p;
                Corners<T> c;
                if (!sample_corners(loc[2 * n], loc[2 * n + 1], height, width, c)) continue;
                T sample = T(0);
                for (int k = 0; k < 4; k++)
                    if (c.pixel[k] >= 0) sample += c.weight[k] * v[c.pixel[k] * nH * D];
                acc += sample * attn[n];
            }
        }
        out[i] = acc;
    }
}

template <class T>
__global__ void cuda_zero_kernel(T* __restrict__ x, idx_t total) {
    for (idx_t i = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; i < total; i += (idx_t)gridDim.x * blockDim.x)
        x[i] = T(0);
}

template <class T>
__device__ __forceinline__ T warp_sum(T x) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

template <class T>
__global__ void cuda_backward_kernel(const T* __restrict__ dout, const T* __restrict__ value,
                                     const T* __restrict__ loc, const T* __restrict__ attn,
                                     T* __restrict__ grad_value, T* __restrict__ grad_loc,
                                     T* __restrict__ grad_attn, idx_t B, idx_t S, idx_t nH, idx_t D, idx_t Lq,
                                     idx_t P, Levels levels) {
    const idx_t L = levels.count, samples = B * Lq * nH * L * P;
    const int lane = threadIdx.x % WARP;
    const idx_t warps = (idx_t)gridDim.x * (blockDim.x / WARP);
    // All lanes of a warp take the same samples, so the shuffles below see a full warp.
    for (idx_t n = (blockIdx.x * (idx_t)blockDim.x + threadIdx.x) / WARP; n < samples; n += warps) {
        const idx_t l = (n / P) % L, bqh = n / (P * L), h = bqh % nH, b = bqh / (nH * Lq);
        const int height = levels.height[l], width = levels.width[l];
        Corners<T> c;
        if (!sample_corners(loc[2 * n], loc[2 * n + 1], height, width, c)) {
            if (lane == 0) { grad_loc[2 * n] = T(0); grad_loc[2 * n + 1] = T(0); grad_attn[n] = T(0); }
            continue;
        }
        const T a = attn[n];
        const T* g = dout + bqh * D;
        const idx_t base = value_offset(b, levels.start[l], h, S, nH, D);
        T dot[4];
        for (int k = 0; k < 4; k++) {
            T acc = T(0);
            if (c.pixel[k] >= 0) {
                const idx_t off = base + c.pixel[k] * nH * D;
                const T coef = a * c.weight[k];
                for (idx_t d = lane; d < D; d += WARP) {
                    acc += g[d] * value[off + d];
                    atomicAdd(grad_value + off + d, coef * g[d]);
                }
            }
            dot[k] = warp_sum(acc);
        }
        if (lane == 0)
            sample_gradients(c, dot, a, height, width, &grad_loc[2 * n], &grad_loc[2 * n + 1], &grad_attn[n]);
    }
}

inline int blocks_for(idx_t threads) {
    const idx_t blocks = (threads + THREADS - 1) / THREADS;
    return (int)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

template <class T>
void cuda_forward(const T* value, const T* loc, const T* attn, T* out, idx_t B, idx_t S, idx_t nH, idx_t D,
                  idx_t Lq, idx_t P, const Levels& levels) {
    cuda_forward_kernel<T><<<blocks_for(B * Lq * nH * D), THREADS>>>(value, loc, attn, out, B, S, nH, D, Lq, P,
                                                                       levels);
}

template <class T>
void cuda_backward(const T* dout, const T* value, const T* loc, const T* attn, T* grad_value, T* grad_loc,
                   T* grad_attn, idx_t B, idx_t S, idx_t nH, idx_t D, idx_t Lq, idx_t P, const Levels& levels) {
    cuda_zero_kernel<T><<<blocks_for(B * S * nH * D), THREADS>>>(grad_value, B * S * nH * D);
    cuda_backward_kernel<T><<<blocks_for(B * Lq * nH * levels.count * P * WARP), THREADS>>>(
        dout, value, loc, attn, grad_value, grad_loc, grad_attn, B, S, nH, D, Lq, P, levels);
}

}  // namespace jseg_msda

#endif  // JSEG_MS_DEFORM_ATTN_CUDA_CUH
