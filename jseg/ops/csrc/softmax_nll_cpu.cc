// Softmax cross-entropy per position on the CPU (jseg/ops/softmax_nll.py). Logits are viewed as
// (N, C, P): C classes, P positions, positions contiguous. Forward, for each (n, p):
//   lse = max_c x + log(sum_c exp(x - max_c x)),   nll = lse - x[label]
// with nll = 0 where the label is the ignore index or outside [0, C). Backward:
//   dx[n, c, p] = g[n, p] * (exp(x[n, c, p] - lse[n, p]) - [c == label])   (0 where nll was 0 by rule).
// Work is split into chunks of CHUNK positions of one image; the C planes of a chunk (C * CHUNK
// values) stay in L2 between the passes, and every inner loop runs over contiguous positions.
// The exponential is the vectorisable polynomial of cpu_exp.h (float; std::exp for double).
#include <algorithm>
#include <cmath>
#include <omp.h>

#include "cpu_exp.h"

namespace jseg_softmax_nll {
typedef long long idx_t;
using jseg_math::exp_approx;
constexpr idx_t CHUNK = 256;
constexpr double PAR_MIN_WORK = 1 << 18;   // elements below which one thread does it all

template <class T>
inline bool counted(int label, int ignore_index, idx_t classes) {
    return label != ignore_index && label >= 0 && label < classes;
}

template <class T>
void forward(const T* __restrict__ x, const int* __restrict__ label, T* __restrict__ nll, T* __restrict__ lse,
             idx_t N, idx_t C, idx_t P, int ignore_index) {
    const idx_t chunks = (P + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) if ((double)N * C * P > PAR_MIN_WORK)
    for (idx_t task = 0; task < N * chunks; task++) {
        const idx_t n = task / chunks, start = (task % chunks) * CHUNK;
        const idx_t len = std::min(CHUNK, P - start);
        const T* base = x + n * C * P + start;
        T m[CHUNK], s[CHUNK];
        for (idx_t i = 0; i < len; i++) { m[i] = base[i]; s[i] = T(0); }
        for (idx_t c = 1; c < C; c++) {
            const T* plane = base + c * P;
            for (idx_t i = 0; i < len; i++) m[i] = std::max(m[i], plane[i]);
        }
        for (idx_t c = 0; c < C; c++) {
            const T* plane = base + c * P;
            for (idx_t i = 0; i < len; i++) s[i] += exp_approx(plane[i] - m[i]);
        }
        const int* lab = label + n * P + start;
        T* out = nll + n * P + start;
        T* l = lse + n * P + start;
        for (idx_t i = 0; i < len; i++) {
            l[i] = m[i] + std::log(s[i]);
            out[i] = counted<T>(lab[i], ignore_index, C) ? l[i] - base[(idx_t)lab[i] * P + i] : T(0);
        }
    }
}

template <class T>
void backward(const T* __restrict__ x, const int* __restrict__ label, const T* __restrict__ lse,
              const T* __restrict__ grad, T* __restrict__ dx, idx_t N, idx_t C, idx_t P, int ignore_index) {
    const idx_t chunks = (P + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) if ((double)N * C * P > PAR_MIN_WORK)
    for (idx_t task = 0; task < N * chunks; task++) {
        const idx_t n = task / chunks, start = (task % chunks) * CHUNK;
        const idx_t len = std::min(CHUNK, P - start);
        const int* lab = label + n * P + start;
        const T* l = lse + n * P + start;
        T g[CHUNK];
        for (idx_t i = 0; i < len; i++) g[i] = counted<T>(lab[i], ignore_index, C) ? grad[n * P + start + i] : T(0);
        for (idx_t c = 0; c < C; c++) {
            const T* plane = x + (n * C + c) * P + start;
            T* out = dx + (n * C + c) * P + start;
            for (idx_t i = 0; i < len; i++) out[i] = g[i] * exp_approx(plane[i] - l[i]);
        }
        for (idx_t i = 0; i < len; i++)
            if (counted<T>(lab[i], ignore_index, C)) dx[(n * C + lab[i]) * P + start + i] -= g[i];
    }
}
}  // namespace jseg_softmax_nll
