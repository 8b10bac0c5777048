// Softmax over the middle dimension of a contiguous (outer, n, inner) array, forward and backward,
// on the CPU. Called from the cpu_src of the jt.code operators in jseg/ops/softmax.py, which
// describes the algorithm. Every function writes all of its output (Jittor does not zero outputs).
//
//   forward:   y[o, j, i] = w[j] e[o, j, i] / sum_j' w[j'] e[o, j', i],  e = exp(x - max_j x)
//              (w = 1 without a weight; a weight of length 1 is broadcast over j)
//   backward:  dx = y * (dy - sum_j dy * y)   (the same formula with or without a weight)
//
// A column (o, :, i) whose maximum is not finite (all -inf, or a +inf / NaN in it) gives NaN, as
// the composition max / subtract / exp / sum / divide does.
#ifndef JSEG_SOFTMAX_CPU_CC
#define JSEG_SOFTMAX_CPU_CC

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu_exp.h"

namespace jseg_softmax {
typedef long long idx_t;

// Elements up to which one thread does all the work (a few ms on one core, at about 1 ns per
// element): a parallel region can wait a whole scheduler time slice (measured: 10-25 ms) for a
// second core on a busy machine, far more than it can save on calls of this size.
constexpr idx_t PAR_MIN_WORK = idx_t(1) << 22;
// Columns per block of the middle-dimension kernels: a block of n rows of the input and of the
// output (2 * n * 128 * 4 bytes, 25.6 KB for the 25 taps of a 5x5 kernel) stays in L1.
constexpr idx_t INNER_BLOCK = 128;

using jseg_math::exp_approx;

// Whether v is finite, from its bits: Jittor compiles with -Ofast, under which std::isfinite may
// be folded to true.
inline bool finite_bits(float v) {
    uint32_t b;
    std::memcpy(&b, &v, sizeof(b));
    return (b & 0x7f800000u) != 0x7f800000u;
}

inline bool finite_bits(double v) {
    uint64_t b;
    std::memcpy(&b, &v, sizeof(b));
    return (b & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

// 1 / s, or NaN when the column's maximum m is not finite.
template <class T>
inline T inverse_or_nan(T s, T m) {
    return finite_bits(m) ? T(1) / s : std::numeric_limits<T>::quiet_NaN();
}

// One row (inner == 1): y[j] = w[j * ws] e[j] / sum. ws is 0 (scalar weight) or 1.
template <class T, bool WEIGHTED>
inline void forward_row(const T* __restrict__ x, const T* __restrict__ w, idx_t ws, T* __restrict__ y, idx_t n) {
    T m = x[0];
    for (idx_t j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    T s = T(0);
    for (idx_t j = 0; j < n; j++) {
        T e = exp_approx(x[j] - m);
        if (WEIGHTED) e *= w[j * ws];
        y[j] = e;
        s += e;
    }
    const T inv = inverse_or_nan(s, m);
    for (idx_t j = 0; j < n; j++) y[j] *= inv;
}

// Columns [0, bl) of one (n, inner) slab, inner > 1: every loop runs over contiguous columns.
template <class T, bool WEIGHTED>
inline void forward_block(const T* __restrict__ x, const T* __restrict__ w, idx_t ws, T* __restrict__ y,
                          idx_t n, idx_t inner, idx_t bl) {
    T m[INNER_BLOCK], s[INNER_BLOCK];
    for (idx_t i = 0; i < bl; i++) { m[i] = x[i]; s[i] = T(0); }
    for (idx_t j = 1; j < n; j++) {
        const T* __restrict__ xr = x + j * inner;
        for (idx_t i = 0; i < bl; i++) m[i] = xr[i] > m[i] ? xr[i] : m[i];
    }
    for (idx_t j = 0; j < n; j++) {
        const T* __restrict__ xr = x + j * inner;
        T* __restrict__ yr = y + j * inner;
        const T wj = WEIGHTED ? w[j * ws] : T(1);
        for (idx_t i = 0; i < bl; i++) {
            T e = exp_approx(xr[i] - m[i]);
            if (WEIGHTED) e *= wj;
            yr[i] = e;
            s[i] += e;
        }
    }
    for (idx_t i = 0; i < bl; i++) s[i] = inverse_or_nan(s[i], m[i]);
    for (idx_t j = 0; j < n; j++) {
        T* __restrict__ yr = y + j * inner;
        for (idx_t i = 0; i < bl; i++) yr[i] *= s[i];
    }
}

// y (outer, n, inner) from x (outer, n, inner) and, if WEIGHTED, w (wn) with wn == n or 1.
template <class T, bool WEIGHTED>
void forward_impl(const T* __restrict__ x, const T* __restrict__ w, idx_t wn, T* __restrict__ y,
                  idx_t outer, idx_t n, idx_t inner) {
    const idx_t ws = wn == 1 ? 0 : 1;
    if (inner == 1) {
        #pragma omp parallel for schedule(static) if (outer * n > PAR_MIN_WORK)
        for (idx_t o = 0; o < outer; o++) forward_row<T, WEIGHTED>(x + o * n, w, ws, y + o * n, n);
        return;
    }
    const idx_t blocks = (inner + INNER_BLOCK - 1) / INNER_BLOCK;
    #pragma omp parallel for schedule(static) if (outer * n * inner > PAR_MIN_WORK)
    for (idx_t t = 0; t < outer * blocks; t++) {
        const idx_t o = t / blocks, i0 = (t % blocks) * INNER_BLOCK;
        const idx_t bl = inner - i0 < INNER_BLOCK ? inner - i0 : INNER_BLOCK;
        const idx_t off = o * n * inner + i0;
        forward_block<T, WEIGHTED>(x + off, w, ws, y + off, n, inner, bl);
    }
}

template <class T>
void forward(const T* x, T* y, idx_t outer, idx_t n, idx_t inner) {
    forward_impl<T, false>(x, nullptr, 1, y, outer, n, inner);
}

template <class T>
void forward_weighted(const T* x, const T* w, idx_t wn, T* y, idx_t outer, idx_t n, idx_t inner) {
    forward_impl<T, true>(x, w, wn, y, outer, n, inner);
}

// dx (outer, n, inner) from y and dy (outer, n, inner): dx = y * (dy - sum_j dy * y).
template <class T>
void backward(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
              idx_t outer, idx_t n, idx_t inner) {
    if (inner == 1) {
        #pragma omp parallel for schedule(static) if (outer * n > PAR_MIN_WORK)
        for (idx_t o = 0; o < outer; o++) {
            const T* __restrict__ yr = y + o * n;
            const T* __restrict__ gr = dy + o * n;
            T* __restrict__ dr = dx + o * n;
            T dot = T(0);
            for (idx_t j = 0; j < n; j++) dot += yr[j] * gr[j];
            for (idx_t j = 0; j < n; j++) dr[j] = yr[j] * (gr[j] - dot);
        }
        return;
    }
    const idx_t blocks = (inner + INNER_BLOCK - 1) / INNER_BLOCK;
    #pragma omp parallel for schedule(static) if (outer * n * inner > PAR_MIN_WORK)
    for (idx_t t = 0; t < outer * blocks; t++) {
        const idx_t o = t / blocks, i0 = (t % blocks) * INNER_BLOCK;
        const idx_t bl = inner - i0 < INNER_BLOCK ? inner - i0 : INNER_BLOCK;
        const idx_t off = o * n * inner + i0;
        T dot[INNER_BLOCK];
        for (idx_t i = 0; i < bl; i++) dot[i] = T(0);
        for (idx_t j = 0; j < n; j++) {
            const T* __restrict__ yr = y + off + j * inner;
            const T* __restrict__ gr = dy + off + j * inner;
            for (idx_t i = 0; i < bl; i++) dot[i] += yr[i] * gr[i];
        }
        for (idx_t j = 0; j < n; j++) {
            const T* __restrict__ yr = y + off + j * inner;
            const T* __restrict__ gr = dy + off + j * inner;
            T* __restrict__ dr = dx + off + j * inner;
            for (idx_t i = 0; i < bl; i++) dr[i] = yr[i] * (gr[i] - dot[i]);
        }
    }
}
}  // namespace jseg_softmax

#endif  // JSEG_SOFTMAX_CPU_CC
