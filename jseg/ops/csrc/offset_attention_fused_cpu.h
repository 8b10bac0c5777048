// The register-tiled matrix-product micro-kernel and the packing helpers of the 'fused' CPU
// strategy of the coupled attention (offset_attention_fused_cpu.cc; algorithm described in
// jseg/ops/offset_attention_fused_cpu.py). Host code only (GCC vector extensions, OpenMP).
#ifndef JSEG_OFFSET_ATTENTION_FUSED_CPU_H
#define JSEG_OFFSET_ATTENTION_FUSED_CPU_H

#include <vector>
#include <cstring>
#include <cmath>
#include <limits>
#include <algorithm>
#include <omp.h>

#include "cpu_simd.h"

namespace jseg_oa {
typedef long long idx_t;
// Vector width and register tile from cpu_simd.h (chosen for the instruction set compiled for).
constexpr int VBYTES = jseg_simd::BYTES;
constexpr int MR_MAX = jseg_simd::GEMM_MR;   // rows per register tile
constexpr int NR = jseg_simd::GEMM_NR;       // SIMD vectors per register tile row
constexpr idx_t PAD = jseg_simd::GEMM_PAD;   // K and C are padded to multiples of PAD (NR float lanes)
constexpr double PAR_MIN_WORK = 1 << 22;     // multiply-adds below which one thread does it all

template <class T> struct Vec { typedef typename jseg_simd::Vec<T>::type type; };

inline idx_t round_up(idx_t x, idx_t m) { return (x + m - 1) / m * m; }

// O[0:MR, 0:NR*VL] (+)= X[0:MR, 0:L] * Y[0:L, 0:NR*VL]; all row-major with leading dims.
template <class T, int MR>
inline void micro(idx_t L, const T* __restrict__ X, idx_t ldx, const T* __restrict__ Y, idx_t ldy,
                  T* __restrict__ O, idx_t ldo, bool accumulate) {
    typedef typename Vec<T>::type V;
    constexpr int VL = VBYTES / sizeof(T);
    V c[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NR; v++) {
            if (accumulate) std::memcpy(&c[r][v], O + r * ldo + v * VL, VBYTES);
            else c[r][v] = V{};
        }
    for (idx_t l = 0; l < L; l++) {
        V y[NR];
        for (int v = 0; v < NR; v++) std::memcpy(&y[v], Y + l * ldy + v * VL, VBYTES);
        for (int r = 0; r < MR; r++) {
            const T x = X[r * ldx + l];
            for (int v = 0; v < NR; v++) c[r][v] += x * y[v];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NR; v++) std::memcpy(O + r * ldo + v * VL, &c[r][v], VBYTES);
}

// O (M x N) (+)= X (M x L) * Y (L x N); N must be a multiple of NR*VL (guaranteed by PAD).
template <class T>
inline void gemm(idx_t M, idx_t N, idx_t L, const T* X, idx_t ldx, const T* Y, idx_t ldy,
                 T* O, idx_t ldo, bool accumulate) {
    constexpr int VL = VBYTES / sizeof(T);
    for (idx_t j = 0; j < N; j += NR * VL) {
        idx_t i = 0;
        for (; i + MR_MAX <= M; i += MR_MAX)
            micro<T, MR_MAX>(L, X + i * ldx, ldx, Y + j, ldy, O + i * ldo + j, ldo, accumulate);
        const idx_t rest = M - i;
        const T* x = X + i * ldx; const T* y = Y + j; T* o = O + i * ldo + j;
        switch (rest) {
            case 1: micro<T, 1>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 2: micro<T, 2>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 3: micro<T, 3>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 4: micro<T, 4>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 5: micro<T, 5>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 6: micro<T, (6 < MR_MAX ? 6 : 1)>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 7: micro<T, (7 < MR_MAX ? 7 : 1)>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            default: break;
        }
    }
}

// Copy token-major rows [n0, n0+nv) of src (N x C) into dst (NB x ldd), zero-filling rows nv..NB.
template <class T>
inline void pack_rows(const T* __restrict__ src, idx_t C, idx_t n0, idx_t nv, idx_t NB,
                      T* __restrict__ dst, idx_t ldd) {
    for (idx_t n = 0; n < nv; n++) std::memcpy(dst + n * ldd, src + (n0 + n) * C, sizeof(T) * C);
    for (idx_t n = nv; n < NB; n++) std::memset(dst + n * ldd, 0, sizeof(T) * ldd);
}

// Copy columns [n0, n0+nv) of src (C x N, channels-first) into dst (C x ldd), zero-filling
// columns nv..NB.
template <class T>
inline void pack_cols(const T* __restrict__ src, idx_t C, idx_t N, idx_t n0, idx_t nv, idx_t NB,
                      T* __restrict__ dst, idx_t ldd) {
    for (idx_t c = 0; c < C; c++) {
        std::memcpy(dst + c * ldd, src + c * N + n0, sizeof(T) * nv);
        for (idx_t n = nv; n < NB; n++) dst[c * ldd + n] = T(0);
    }
}
}  // namespace jseg_oa

#endif  // JSEG_OFFSET_ATTENTION_FUSED_CPU_H
