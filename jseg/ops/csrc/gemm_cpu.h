// Packed matrix product on the CPU, Goto/BLIS style: C = op(A) op(B), optionally batched, for the
// jt.code operators of jseg/ops/gemm.py (which describes the algorithm and its measurements).
// Host code only (GCC vector extensions, OpenMP). Widths, register tile and cache blocks come from
// cpu_simd.h (GEMM_MR, GEMM_NR, GEMM_KC, GEMM_MC, GEMM_NC).
//
// Operands are described by strides, so a transpose or a broadcast costs nothing: element (i, k)
// of op(A) of batch b is A[b * a_bs + i * a_rs + k * a_cs] (a_bs = 0 for an operand shared by the
// batch), the same for B (k, j); C (i, j) of batch b is C[b * c_bs + i * ldc + j]. c_bs = 0 with a
// batch of several sums the batch's products into one C (the gradient of a shared operand).
#ifndef JSEG_GEMM_CPU_H
#define JSEG_GEMM_CPU_H

#include <algorithm>
#include <cstdlib>
#include <stdlib.h>
#include <cstring>
#include <omp.h>

#include "cpu_simd.h"

namespace jseg_gemm {
typedef long long idx_t;
constexpr int VBYTES = jseg_simd::BYTES;
constexpr int MR = jseg_simd::GEMM_MR;      // rows of a register tile
constexpr int NR = jseg_simd::GEMM_NR;      // vectors per register tile row
constexpr idx_t KC = jseg_simd::GEMM_KC;    // reduction depth of a packed block (L1 strips)
constexpr idx_t MC = jseg_simd::GEMM_MC;    // rows of a packed A block (L2)
constexpr idx_t NC = jseg_simd::GEMM_NC;    // columns of a packed B panel (L3)
// Multiply-adds below which one thread does all the work (about 30 us on one AVX2 core). On a
// quiet machine with 2 threads, OffSeg-T's backbone training pass (batch 2, 512x512) took 1.8 s
// with 2^27 (most of its products on one thread), 1.4-1.5 s with 2^22, 1.1-1.3 s with 2^20 and
// 1.3 s with 2^18. On a busy machine a parallel region can wait a scheduler time slice for the
// second core (10-25 ms measured for other kernels); run with OMP_NUM_THREADS=1 there.
constexpr double PAR_MIN_WORK = double(1 << 20);

// Products of at most this many register tiles of columns read A in place instead of packing it.
constexpr idx_t DIRECT_A_MAX_COLS = 4;
// B panels of at most this many bytes (shallow products: K = 32 with 2048 columns) are walked
// by rows of register tiles, so that C is written along its rows.
constexpr idx_t ROW_ORDER_MAX_PANEL_BYTES = idx_t(256) << 10;
// Products of at most this many rows read B in place instead of packing it.
constexpr idx_t DIRECT_B_MAX_ROWS = 48;

template <class T> struct Vec { typedef typename jseg_simd::Vec<T>::type type; };
template <class T> constexpr int lanes() { return VBYTES / (int)sizeof(T); }
template <class T> constexpr int tile_cols() { return NR * lanes<T>(); }

inline idx_t ceil_div(idx_t a, idx_t b) { return (a + b - 1) / b; }
inline idx_t round_up(idx_t a, idx_t b) { return ceil_div(a, b) * b; }

// A strided operand: element (r, c) of matrix b is p[b * bs + r * rs + c * cs].
template <class T> struct Operand {
    const T* p; idx_t bs, rs, cs;
    const T* at(idx_t b) const { return p + b * bs; }
};

// Pack rows [i0, i0 + mc) x columns [k0, k0 + kc) of op(A) into strips of MR rows: strip s holds
// kc groups of MR values (row i0 + s * MR + r at position k * MR + r); rows past mc are zero.
template <class T>
void pack_a(const T* __restrict__ a, idx_t rs, idx_t cs, idx_t i0, idx_t mc, idx_t k0, idx_t kc,
            T* __restrict__ dst) {
    for (idx_t s = 0; s * MR < mc; s++) {
        T* d = dst + s * MR * kc;
        const idx_t rows = std::min<idx_t>(MR, mc - s * MR);
        const T* src = a + (i0 + s * MR) * rs + k0 * cs;
        if (rs == 1) {  // op(A) column-contiguous (a transposed A): read along the rows
            for (idx_t k = 0; k < kc; k++) {
                for (idx_t r = 0; r < rows; r++) d[k * MR + r] = src[k * cs + r];
                for (idx_t r = rows; r < MR; r++) d[k * MR + r] = T(0);
            }
        } else {        // read each row along k
            for (idx_t r = 0; r < rows; r++)
                for (idx_t k = 0; k < kc; k++) d[k * MR + r] = src[r * rs + k * cs];
            for (idx_t r = rows; r < MR; r++)
                for (idx_t k = 0; k < kc; k++) d[k * MR + r] = T(0);
        }
    }
}

// Pack rows [k0, k0 + kc) x columns [j0, j0 + nc) of op(B) into strips of NW = NR vectors of
// columns: strip t holds kc rows of NW values (column j0 + t * NW + j at k * NW + j); columns past
// nc are zero.
template <class T>
void pack_b(const T* __restrict__ b, idx_t rs, idx_t cs, idx_t k0, idx_t kc, idx_t j0, idx_t nc,
            T* __restrict__ dst) {
    constexpr idx_t NW = tile_cols<T>();
    for (idx_t t = 0; t * NW < nc; t++) {
        T* d = dst + t * NW * kc;
        const idx_t cols = std::min<idx_t>(NW, nc - t * NW);
        const T* src = b + k0 * rs + (j0 + t * NW) * cs;
        if (cs == 1) {  // rows of op(B) contiguous
            for (idx_t k = 0; k < kc; k++) {
                std::memcpy(d + k * NW, src + k * rs, sizeof(T) * cols);
                for (idx_t j = cols; j < NW; j++) d[k * NW + j] = T(0);
            }
        } else {        // a transposed B: read each column along k
            for (idx_t j = 0; j < cols; j++)
                for (idx_t k = 0; k < kc; k++) d[k * NW + j] = src[j * cs + k * rs];
            for (idx_t j = cols; j < NW; j++)
                for (idx_t k = 0; k < kc; k++) d[k * NW + j] = T(0);
        }
    }
}

// The register tile: O[0:MR, 0:NW] (+)= A strip (MR x kc) times B strip (kc x NW), MR x NR
// vectors of accumulators, one broadcast of A and NR loads of B per step of k. The A strip is
// packed (PACKED_A: element (r, k) at ap[k * MR + r]) or read in place from rows of lda elements
// (ap[r * lda + k]); row k of the B strip starts at bp + k * ldb (ldb = NW when packed).
template <class T, bool PACKED_A>
inline void micro(idx_t kc, const T* __restrict__ ap, idx_t lda, const T* __restrict__ bp, idx_t ldb,
                  T* __restrict__ o, idx_t ldo, bool accumulate) {
    typedef typename Vec<T>::type V;
    constexpr int VL = lanes<T>();
    constexpr int NW = tile_cols<T>();
    V c[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NR; v++) c[r][v] = V{};
#pragma GCC unroll 4
    for (idx_t k = 0; k < kc; k++) {
        V y[NR];
        for (int v = 0; v < NR; v++) std::memcpy(&y[v], bp + k * ldb + v * VL, VBYTES);
        for (int r = 0; r < MR; r++) {
            const T x = PACKED_A ? ap[k * MR + r] : ap[r * lda + k];
            for (int v = 0; v < NR; v++) c[r][v] += x * y[v];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NR; v++) {
            if (accumulate) {
                V old;
                std::memcpy(&old, o + r * ldo + v * VL, VBYTES);
                c[r][v] += old;
            }
            std::memcpy(o + r * ldo + v * VL, &c[r][v], VBYTES);
        }
}

// C[0:mc, 0:nc] (+)= A block (mc x kc) times B panel (kc x nc), register tile by register tile. The A block
// is packed (ap, lda = 0) or, for a narrow panel, read in place from rows of lda elements; edge
// strips of an in-place block are packed into edge_a first (MR x kc). The B panel is packed (bp,
// ldb = 0) or, for a product of few rows, read in place from rows of ldb elements, its last strip
// packed into edge_b (kc x NW) when narrower than a tile. Edge tiles go through a local tile and
// copy back only their valid part.
template <class T>
void macro(idx_t mc, idx_t nc, idx_t kc, const T* ap, idx_t lda, const T* bp, idx_t ldb, T* c, idx_t ldc,
           bool accumulate, T* edge_a, T* edge_b) {
    constexpr idx_t NW = tile_cols<T>();
    alignas(64) T tile[MR * NW];
    const idx_t full_rows = lda ? mc / MR * MR : mc;
    const idx_t full_cols = ldb ? nc / NW * NW : nc;
    if (lda && full_rows < mc) pack_a<T>(ap, lda, 1, full_rows, mc - full_rows, 0, kc, edge_a);
    if (ldb && full_cols < nc) pack_b<T>(bp, ldb, 1, 0, kc, full_cols, nc - full_cols, edge_b);
    auto tile_at = [&](idx_t i, idx_t j) {
        const idx_t rows = std::min<idx_t>(MR, mc - i), cols = std::min(NW, nc - j);
        const bool b_in_place = ldb && j < full_cols;
        const T* b = b_in_place ? bp + j : ldb ? edge_b : bp + j * kc;
        const idx_t b_step = b_in_place ? ldb : NW;
        T* o = c + i * ldc + j;
        const bool in_place = lda && i < full_rows;
        const T* a = in_place ? ap + i * lda : lda ? edge_a : ap + i * kc;
        if (rows == MR && cols == NW) {
            if (in_place) micro<T, false>(kc, a, lda, b, b_step, o, ldc, accumulate);
            else micro<T, true>(kc, a, 0, b, b_step, o, ldc, accumulate);
            return;
        }
        if (in_place) micro<T, false>(kc, a, lda, b, b_step, tile, NW, false);
        else micro<T, true>(kc, a, 0, b, b_step, tile, NW, false);
        for (idx_t r = 0; r < rows; r++)
            for (idx_t q = 0; q < cols; q++)
                o[r * ldc + q] = accumulate ? o[r * ldc + q] + tile[r * NW + q] : tile[r * NW + q];
    };
    if (lda || kc * nc * idx_t(sizeof(T)) <= ROW_ORDER_MAX_PANEL_BYTES) {
        // in-place A (a narrow panel) or a shallow panel that stays in L2: each A strip stays in
        // L1 across the B strips, and C is written row strip by row strip
        for (idx_t i = 0; i < mc; i += MR)
            for (idx_t j = 0; j < nc; j += NW) tile_at(i, j);
    } else {     // each B strip stays in L1 across the A strips of the packed block
        for (idx_t j = 0; j < nc; j += NW)
            for (idx_t i = 0; i < mc; i += MR) tile_at(i, j);
    }
}

// Scratch of one thread: a packed A block and a packed B panel, 64-byte aligned, uninitialised.
template <class T> struct Scratch {
    T* a = nullptr; T* b = nullptr;
    Scratch() {   // posix_memalign: Jittor compiles as C++14, without std::aligned_alloc
        void* p = nullptr;
        if (posix_memalign(&p, 64, sizeof(T) * MC * KC) == 0) a = static_cast<T*>(p);
        if (posix_memalign(&p, 64, sizeof(T) * KC * NC) == 0) b = static_cast<T*>(p);
    }
    ~Scratch() { std::free(a); std::free(b); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
};

// C = op(A) op(B) for every batch (see the top of the file for the strides). Work items are
// (output batch, NC column panel, row chunk); rows are split into MC chunks only when the panels
// are fewer than the threads. Every element of C is computed by one thread in one fixed order
// (K in KC blocks, then the batch when it is summed), so the result does not depend on the thread
// count.
template <class T>
void gemm(idx_t batch, idx_t M, idx_t N, idx_t K, Operand<T> A, Operand<T> B, T* C, idx_t c_bs, idx_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || batch <= 0) {
        const idx_t out_batch = (c_bs == 0 || batch <= 0) ? 1 : batch;
        for (idx_t b = 0; b < out_batch; b++)
            for (idx_t i = 0; i < M; i++) std::fill(C + b * c_bs + i * ldc, C + b * c_bs + i * ldc + N, T(0));
        return;
    }
    const bool summed = c_bs == 0 && batch > 1;
    const idx_t out_batch = summed ? 1 : batch;
    const idx_t panels = ceil_div(N, NC);
    // A narrow product reads rows of A in place: packing A costs a pass over it, which only
    // DIRECT_A_MAX_COLS / NW register tiles per row would reuse (see DIRECT_A_MAX_COLS).
    const bool direct_a = A.cs == 1 && N <= DIRECT_A_MAX_COLS * tile_cols<T>();
    // A product of few rows reads rows of B in place: packing B costs a pass over it, which only
    // DIRECT_B_MAX_ROWS / MR register tiles per column would reuse.
    const bool direct_b = B.cs == 1 && M <= DIRECT_B_MAX_ROWS;
    const bool parallel = double(batch) * M * N * K >= PAR_MIN_WORK && omp_get_max_threads() > 1;
    const idx_t threads = parallel ? omp_get_max_threads() : 1;
    const idx_t chunks = out_batch * panels >= threads ? 1 : ceil_div(M, MC);
    const idx_t items = out_batch * panels * chunks;
#pragma omp parallel if (parallel)
    {
        Scratch<T> s;
#pragma omp for schedule(static)
        for (idx_t item = 0; item < items; item++) {
            const idx_t chunk = item % chunks;
            const idx_t panel = (item / chunks) % panels;
            const idx_t ob = item / (chunks * panels);
            const idx_t j0 = panel * NC, nc = std::min(NC, N - j0);
            const idx_t m_lo = chunks == 1 ? 0 : chunk * MC;
            const idx_t m_hi = chunks == 1 ? M : std::min(M, m_lo + MC);
            T* c = C + ob * c_bs + j0;
            // rows per packed A block: the chunk's rows in equal blocks of at most MC (150 rows
            // as 78 + 72, not 144 + 6: a thin last block streams the whole B panel for few rows)
            const idx_t mb = std::min(MC, round_up(ceil_div(m_hi - m_lo, ceil_div(m_hi - m_lo, MC)), MR));
            for (idx_t b = summed ? 0 : ob; b < (summed ? batch : ob + 1); b++) {
                for (idx_t k0 = 0; k0 < K; k0 += KC) {
                    const idx_t kc = std::min(KC, K - k0);
                    const T* b_panel = B.at(b) + k0 * B.rs + j0;   // in place (direct_b)
                    if (!direct_b) pack_b<T>(B.at(b), B.rs, B.cs, k0, kc, j0, nc, s.b);
                    const T* bp = direct_b ? b_panel : s.b;
                    const idx_t ldb = direct_b ? B.rs : 0;
                    const bool accumulate = k0 > 0 || (summed && b > 0);
                    for (idx_t i0 = m_lo; i0 < m_hi; i0 += mb) {
                        const idx_t mc = std::min(mb, m_hi - i0);
                        if (direct_a) {
                            macro<T>(mc, nc, kc, A.at(b) + i0 * A.rs + k0, A.rs, bp, ldb, c + i0 * ldc, ldc,
                                     accumulate, s.a, s.b);
                        } else {
                            pack_a<T>(A.at(b), A.rs, A.cs, i0, mc, k0, kc, s.a);
                            macro<T>(mc, nc, kc, s.a, 0, bp, ldb, c + i0 * ldc, ldc, accumulate, s.a, s.b);
                        }
                    }
                }
            }
        }
    }
}

}  // namespace jseg_gemm

#endif  // JSEG_GEMM_CPU_H
