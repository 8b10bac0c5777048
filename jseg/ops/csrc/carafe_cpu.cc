// CARAFE on the CPU: the row-blocked operators (the fast path) and the 'elementwise' operators,
// which loop over the per-element functions of carafe.h that the CUDA kernels use.
// Called from the cpu_src of the jt.code operators in jseg/ops/carafe_kernel.py; the algorithm
// is described there. Every function writes all of its output (Jittor does not zero outputs).
#ifndef JSEG_CARAFE_CPU_CC
#define JSEG_CARAFE_CPU_CC

#include <algorithm>
#include <cstring>
#include <vector>

#include "carafe.h"
#include "cpu_simd.h"

namespace jseg_carafe {
// Multiply-adds (a few ms on one core) below which one thread does it all: a parallel region
// can wait a whole scheduler time slice for a second core on a busy machine.
constexpr long long PAR_MIN_WORK = 1 << 25;

// u[t] = frow[t / SC - R] for t in [0, SC*(w + 2R)), zero outside the row.
template <class T, int KS, int SC>
inline void expand_row(const T* __restrict__ frow, T* __restrict__ u, idx_t w) {
    const int R = (KS - 1) / 2;
    for (int t = 0; t < SC * R; t++) { u[t] = T(0); u[SC * (w + R) + t] = T(0); }
    T* __restrict__ body = u + SC * R;
    if (SC == 1) {
        std::memcpy(body, frow, sizeof(T) * w);
    } else {
        for (idx_t x = 0; x < w; x++)
            for (int p = 0; p < SC; p++) body[x * SC + p] = frow[x];
    }
}

// The KK = KS*KS mask rows of one output row Y lie H*W apart in the masks (B, G*KK, H, W): at
// OffSeg's shapes a power-of-two stride, which maps them all to the same few cache sets, so they
// would be evicted before the next channel reads them again. The kernels copy the rows a task
// needs into a contiguous buffer once per channel group (rows of W values, tap after tap).
template <class T>
inline void copy_rows(const T* __restrict__ src, idx_t stride, int rows, idx_t W, T* __restrict__ dst) {
    for (int r = 0; r < rows; r++) std::memcpy(dst + r * W, src + r * stride, sizeof(T) * W);
}

// o[q] = sum over the valid tap rows i and the taps j of mt_ij[q] * u_i[q + j*SC], q < n, where
// mt_ij = mrow + (i*KS + j)*tap_stride and u_i = u + i*UW. A full tile (n == carafe_tile<T>()) keeps its
// outputs in CARAFE_TILE_VECTORS vector registers over all k*k taps; a shorter one (the end of a
// row) runs the same sums element by element.
template <class T, int KS, int SC>
inline void forward_tile(const T* __restrict__ mrow, idx_t tap_stride, const T* __restrict__ u, idx_t UW,
                         const bool* valid, T* __restrict__ o, int n) {
    typedef typename jseg_simd::Vec<T>::type V;
    constexpr int VL = jseg_simd::BYTES / sizeof(T), NV = jseg_simd::CARAFE_TILE_VECTORS;
    if (n == NV * VL) {
        V acc[NV];
        for (int v = 0; v < NV; v++) acc[v] = V{};
        for (int i = 0; i < KS; i++) {
            if (!valid[i]) continue;
            for (int j = 0; j < KS; j++) {
                const T* mt = mrow + (idx_t)(i * KS + j) * tap_stride;
                const T* ut = u + i * UW + j * SC;
                for (int v = 0; v < NV; v++) {
                    V a, b;
                    std::memcpy(&a, mt + v * VL, sizeof(V));
                    std::memcpy(&b, ut + v * VL, sizeof(V));
                    acc[v] += a * b;
                }
            }
        }
        std::memcpy(o, acc, sizeof(acc));
        return;
    }
    for (int q = 0; q < n; q++) o[q] = T(0);
    for (int i = 0; i < KS; i++) {
        if (!valid[i]) continue;
        for (int j = 0; j < KS; j++) {
            const T* __restrict__ mt = mrow + (idx_t)(i * KS + j) * tap_stride;
            const T* __restrict__ ut = u + i * UW + j * SC;
            for (int q = 0; q < n; q++) o[q] += mt[q] * ut[q];
        }
    }
}

// out (B, C, H, W) from features (B, C, h, w) and masks (B, G*KS*KS, H, W).
template <class T, int KS, int SC>
void forward_blocked(const T* __restrict__ fbase, const T* __restrict__ mbase, T* __restrict__ obase,
                     idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    constexpr int R = (KS - 1) / 2, KK = KS * KS, XT = jseg_simd::carafe_tile<T>();
    const idx_t cpg = C / G, H = h * SC, W = w * SC;
    const idx_t UW = SC * (w + 2 * R);
    #pragma omp parallel if (B * C * H * W * KK > PAR_MIN_WORK)
    {
        std::vector<T> ubuf(KS * UW), mbuf(SC * KK * W);   // mbuf[(py*KK + tap)*W + X]
        #pragma omp for schedule(static)
        for (idx_t by = 0; by < B * h; by++) {
            const idx_t b = by / h, y = by % h;
            for (idx_t c = 0; c < C; c++) {
                const idx_t g = c / cpg;
                if (c % cpg == 0)
                    for (int py = 0; py < SC; py++)
                        copy_rows(mbase + ((b * G + g) * KK * H + y * SC + py) * W, H * W, KK, W,
                                  mbuf.data() + py * KK * W);
                const T* frows = fbase + (b * C + c) * h * w;
                bool valid[KS];
                for (int i = 0; i < KS; i++) {
                    const idx_t sy = y + i - R;
                    valid[i] = sy >= 0 && sy < h;
                    if (valid[i]) expand_row<T, KS, SC>(frows + sy * w, ubuf.data() + i * UW, w);
                }
                for (int py = 0; py < SC; py++) {
                    const idx_t Y = y * SC + py;
                    T* o = obase + ((b * C + c) * H + Y) * W;
                    const T* mrow = mbuf.data() + py * KK * W;
                    for (idx_t X = 0; X < W; X += XT)
                        forward_tile<T, KS, SC>(mrow + X, W, ubuf.data() + X, UW, valid, o + X,
                                                (int)std::min<idx_t>(XT, W - X));
                }
            }
        }
    }
}

// d features (B, C, h, w) from dout (B, C, H, W) and masks (B, G*KS*KS, H, W).
template <class T, int KS, int SC>
void grad_features_blocked(const T* __restrict__ dbase, const T* __restrict__ mbase, T* __restrict__ dfbase,
                           idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    constexpr int R = (KS - 1) / 2, KK = KS * KS;
    const idx_t cpg = C / G, H = h * SC, W = w * SC;
    const idx_t UW = SC * (w + 2 * R);
    #pragma omp parallel if (B * C * H * W * KK > PAR_MIN_WORK)
    {
        std::vector<T> ubuf(UW), mbuf(KS * SC * KS * W);   // mbuf[((i*SC + py)*KS + j)*W + X]
        #pragma omp for schedule(static)
        for (idx_t by = 0; by < B * h; by++) {
            const idx_t b = by / h, y = by % h;
            for (idx_t c = 0; c < C; c++) {
                const idx_t g = c / cpg;
                if (c % cpg == 0)
                    for (int i = 0; i < KS; i++) {
                        const idx_t yy = y - i + R;
                        if (yy < 0 || yy >= h) continue;
                        for (int py = 0; py < SC; py++)
                            copy_rows(mbase + (((b * G + g) * KK + i * KS) * H + yy * SC + py) * W, H * W, KS, W,
                                      mbuf.data() + (i * SC + py) * KS * W);
                    }
                T* __restrict__ U = ubuf.data();
                for (idx_t t = 0; t < UW; t++) U[t] = T(0);
                for (int i = 0; i < KS; i++) {
                    const idx_t yy = y - i + R;
                    if (yy < 0 || yy >= h) continue;
                    for (int py = 0; py < SC; py++) {
                        const idx_t Y = yy * SC + py;
                        const T* __restrict__ d = dbase + ((b * C + c) * H + Y) * W;
                        const T* mrow = mbuf.data() + (i * SC + py) * KS * W;
                        for (int j = 0; j < KS; j++) {
                            const T* __restrict__ mt = mrow + j * W;
                            T* __restrict__ u = U + j * SC;
                            for (idx_t X = 0; X < W; X++) u[X] += mt[X] * d[X];
                        }
                    }
                }
                T* __restrict__ dfr = dfbase + ((b * C + c) * h + y) * w;
                for (idx_t x = 0; x < w; x++) {
                    T v = T(0);
                    for (int px = 0; px < SC; px++) v += U[(x + R) * SC + px];
                    dfr[x] = v;
                }
            }
        }
    }
}

// d masks (B, G*KS*KS, H, W) from dout (B, C, H, W) and features (B, C, h, w).
template <class T, int KS, int SC>
void grad_masks_blocked(const T* __restrict__ dbase, const T* __restrict__ fbase, T* __restrict__ dmbase,
                        idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    constexpr int R = (KS - 1) / 2, KK = KS * KS;
    const idx_t cpg = C / G, H = h * SC, W = w * SC;
    const idx_t UW = SC * (w + 2 * R);
    #pragma omp parallel if (B * C * H * W * KK > PAR_MIN_WORK)
    {
        std::vector<T> ubuf(KS * UW), dmbuf(SC * KK * W);   // dmbuf[(py*KK + tap)*W + X]
        #pragma omp for schedule(static)
        for (idx_t by = 0; by < B * h; by++) {
            const idx_t b = by / h, y = by % h;
            for (idx_t c = 0; c < C; c++) {
                const idx_t g = c / cpg;
                if (c % cpg == 0) std::memset(dmbuf.data(), 0, sizeof(T) * SC * KK * W);
                const T* frows = fbase + (b * C + c) * h * w;
                bool valid[KS];
                for (int i = 0; i < KS; i++) {
                    const idx_t sy = y + i - R;
                    valid[i] = sy >= 0 && sy < h;
                    if (valid[i]) expand_row<T, KS, SC>(frows + sy * w, ubuf.data() + i * UW, w);
                }
                for (int py = 0; py < SC; py++) {
                    const idx_t Y = y * SC + py;
                    const T* __restrict__ d = dbase + ((b * C + c) * H + Y) * W;
                    T* dmrow = dmbuf.data() + py * KK * W;
                    for (int i = 0; i < KS; i++) {
                        if (!valid[i]) continue;
                        for (int j = 0; j < KS; j++) {
                            T* __restrict__ dm = dmrow + (i * KS + j) * W;
                            const T* __restrict__ u = ubuf.data() + i * UW + j * SC;
                            for (idx_t X = 0; X < W; X++) dm[X] += d[X] * u[X];
                        }
                    }
                }
                if (c % cpg == cpg - 1)   // the group's last channel: write its mask-gradient rows
                    for (int py = 0; py < SC; py++)
                        for (int t = 0; t < KK; t++)
                            std::memcpy(dmbase + (((b * G + g) * KK + t) * H + y * SC + py) * W,
                                        dmbuf.data() + (py * KK + t) * W, sizeof(T) * W);
            }
        }
    }
}

// The CUDA kernels' arithmetic on the CPU: one element per loop iteration (carafe.h).
template <class T, int KS, int SC>
void forward_elementwise(const T* f, const T* m, T* out, idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t total = B * C * h * SC * w * SC;
    #pragma omp parallel for schedule(static) if (total * KS * KS > PAR_MIN_WORK)
    for (idx_t n = 0; n < total; n++) out[n] = fwd_element<T, KS, SC>(f, m, n, C, h, w, G);
}

template <class T, int KS, int SC>
void grad_features_elementwise(const T* dout, const T* m, T* df, idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t total = B * C * h * w;
    #pragma omp parallel for schedule(static) if (total * KS * KS > PAR_MIN_WORK)
    for (idx_t n = 0; n < total; n++) df[n] = dfeat_element<T, KS, SC>(dout, m, n, C, h, w, G);
}

template <class T, int KS, int SC>
void grad_masks_elementwise(const T* dout, const T* f, T* dm, idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t total = B * G * KS * KS * h * SC * w * SC;
    #pragma omp parallel for schedule(static) if (total * KS * KS > PAR_MIN_WORK)
    for (idx_t n = 0; n < total; n++) dm[n] = dmask_element<T, KS, SC>(dout, f, n, C, h, w, G);
}
}  // namespace jseg_carafe

#endif  // JSEG_CARAFE_CPU_CC
