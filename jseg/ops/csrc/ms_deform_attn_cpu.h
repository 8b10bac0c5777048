// Multi-scale deformable attention: CPU kernels (OpenMP), called from the
// jt.code cpu_src of jseg/ops/ms_deform_attn_kernel.py.
//
// forward:  parallel over (b, q): a task writes the output row out[b, q, :]
//           (nH*D values); for each head, level and point it adds
//           a * weight_k * value_k[0:D] for the four neighbours k, an inner loop
//           over D contiguous channels.
// backward: parallel over (b, head, level): a task owns grad_value[b, S_l, head, :]
//           (S_l the positions of level l) and the location/weight gradients of
//           the samples of that (b, head, level), so no two threads write the
//           same location and no atomics are needed; results do not depend on
//           the thread count. Every task handles Lq*P samples (B*nH*L tasks,
//           24 per image for Mask2Former), inner loops over D channels.
// Small calls (below PARALLEL_MIN_SAMPLES samples) run on one thread: a parallel
// region can wait a whole scheduler slice for a second core on a busy machine.
// No vector width or block size here: the inner loops over the D channels are
// vectorised by the compiler for the instruction set it targets (-march=native
// under Jittor); cpu_simd.h holds the constants of the kernels that have them.
#ifndef JSEG_MS_DEFORM_ATTN_CPU_H
#define JSEG_MS_DEFORM_ATTN_CPU_H

#include "ms_deform_attn_common.h"

namespace jseg_msda {

constexpr idx_t PARALLEL_MIN_SAMPLES = 1 << 14;

// value (B, S, nH, D), loc (B, Lq, nH, L, P, 2), attn (B, Lq, nH, L, P) -> out (B, Lq, nH*D)
template <class T>
void cpu_forward(const T* __restrict__ value, const T* __restrict__ loc, const T* __restrict__ attn,
                 T* __restrict__ out, idx_t B, idx_t S, idx_t nH, idx_t D, idx_t Lq, idx_t P,
                 const Levels& levels) {
    const idx_t L = levels.count;
    const bool parallel = B * Lq * nH * L * P >= PARALLEL_MIN_SAMPLES;
    #pragma omp parallel for schedule(static) if (parallel)
    for (idx_t bq = 0; bq < B * Lq; bq++) {
        const idx_t b = bq / Lq;
        T* __restrict__ o = out + bq * nH * D;
        for (idx_t i = 0; i < nH * D; i++) o[i] = T(0);
        for (idx_t h = 0; h < nH; h++) {
            T* __restrict__ oh = o + h * D;
            const idx_t sample0 = (bq * nH + h) * L * P;   // index of (b, q, h, 0, 0)
            for (idx_t l = 0; l < L; l++) {
                const int height = levels.height[l], width = levels.width[l];
                for (idx_t p = 0; p < P; p++) {
                    const idx_t n = sample0 + l * P + p;
                    Corners<T> c;
                    if (!sample_corners(loc[2 * n], loc[2 * n + 1], height, width, c)) continue;
                    const T a = attn[n];
                    for (int k = 0; k < 4; k++) {
                        if (c.pixel[k] < 0) continue;
                        const T coef = a * c.weight[k];
                        const T* __restrict__ v =
                            value + value_offset(b, levels.start[l] + c.pixel[k], h, S, nH, D);
                        for (idx_t d = 0; d < D; d++) oh[d] += coef * v[d];
                    }
                }
            }
        }
    }
}

// dout (B, Lq, nH*D) -> grad_value (B, S, nH, D), grad_loc (B, Lq, nH, L, P, 2), grad_attn (B, Lq, nH, L, P)
template <class T>
void cpu_backward(const T* __restrict__ dout, const T* __restrict__ value, const T* __restrict__ loc,
                  const T* __restrict__ attn, T* __restrict__ grad_value, T* __restrict__ grad_loc,
                  T* __restrict__ grad_attn, idx_t B, idx_t S, idx_t nH, idx_t D, idx_t Lq, idx_t P,
                  const Levels& levels) {
    const idx_t L = levels.count;
    const bool parallel = B * Lq * nH * L * P >= PARALLEL_MIN_SAMPLES;
    #pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (idx_t task = 0; task < B * nH * L; task++) {
        const idx_t b = task / (nH * L), h = (task / L) % nH, l = task % L;
        const int height = levels.height[l], width = levels.width[l];
        const idx_t start = levels.start[l];
        for (idx_t s = start; s < start + (idx_t)height * width; s++) {
            T* __restrict__ gv = grad_value + value_offset(b, s, h, S, nH, D);
            for (idx_t d = 0; d < D; d++) gv[d] = T(0);
        }
        for (idx_t q = 0; q < Lq; q++) {
            const idx_t bqh = (b * Lq + q) * nH + h;
            const T* __restrict__ g = dout + bqh * D;
            for (idx_t p = 0; p < P; p++) {
                const idx_t n = (bqh * L + l) * P + p;
                Corners<T> c;
                if (!sample_corners(loc[2 * n], loc[2 * n + 1], height, width, c)) {
                    grad_loc[2 * n] = T(0);
                    grad_loc[2 * n + 1] = T(0);
                    grad_attn[n] = T(0);
                    continue;
                }
                const T a = attn[n];
                T dot[4];
                for (int k = 0; k < 4; k++) {
                    dot[k] = T(0);
                    if (c.pixel[k] < 0) continue;
                    const idx_t off = value_offset(b, start + c.pixel[k], h, S, nH, D);
                    const T* __restrict__ v = value + off;
                    T* __restrict__ gv = grad_value + off;
                    const T coef = a * c.weight[k];
                    T acc = T(0);
                    for (idx_t d = 0; d < D; d++) {
                        acc += g[d] * v[d];
                        gv[d] += coef * g[d];
                    }
                    dot[k] = acc;
                }
                sample_gradients(c, dot, a, height, width, &grad_loc[2 * n], &grad_loc[2 * n + 1], &grad_attn[n]);
            }
        }
    }
}

}  // namespace jseg_msda

#endif  // JSEG_MS_DEFORM_ATTN_CPU_H
