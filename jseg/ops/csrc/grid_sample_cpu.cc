// Bilinear grid sampling (4-D, PyTorch's grid_sample semantics) on the CPU: forward, gradient
// w.r.t. the input, gradient w.r.t. the grid. Called from the cpu_src of the jt.code operators
// in jseg/ops/grid_sample.py, which describes the algorithm. Every function writes all of its
// output (Jittor does not zero outputs).
//
// Layouts (row-major): input (N, C, Hi, Wi); grid (N, Ho, Wo, 2) holding (x, y) in [-1, 1];
// out and dout (N, C, Ho, Wo). The Ho*Wo output pixels of an image are handled as one flat
// list P = Ho*Wo, in blocks of BLOCK pixels.
// Template parameters: PAD 0 = 'zeros', 1 = 'border'; AC = align_corners.
#ifndef JSEG_GRID_SAMPLE_CPU_CC
#define JSEG_GRID_SAMPLE_CPU_CC

#include <cmath>
#include <vector>

namespace jseg_grid_sample {
typedef long long idx_t;

// Output pixels per block: the corner tables of a block (4 int32 + 4 (forward, input
// gradient) or 8 (grid gradient) coefficients per pixel) stay in L1 while the channel loop
// runs over them.
constexpr idx_t BLOCK = 256;
// Channels per task of the input-gradient kernel: the corner tables of a block are computed
// once per CBLOCK channels.
constexpr idx_t CBLOCK = 8;
// Bilinear taps (4 multiply-adds each) below which one thread does all the work: a parallel
// region can wait a whole scheduler time slice for a second core on a busy machine.
constexpr idx_t PAR_MIN_WORK = 1 << 19;

// Source coordinate of a normalised grid coordinate along an axis of `size` pixels, and its
// derivative w.r.t. the grid coordinate (PyTorch's grid_sampler_compute_source_index_set_grad):
// unnormalise, then for 'border' clamp to [0, size-1], where the derivative is zero at and
// beyond the clamp limits. For 'zeros' the coordinate is only kept inside [-2, size+1], which
// changes no result (every corner beyond is outside the map) but keeps the int conversion safe.
template <class T, int PAD, bool AC>
inline T source_coordinate(T coord, idx_t size, T& dcoord) {
    T s;
    if (AC) {
        s = ((coord + T(1)) / T(2)) * T(size - 1);
        dcoord = T(size - 1) / T(2);
    } else {
        s = ((coord + T(1)) * T(size) - T(1)) / T(2);
        dcoord = T(size) / T(2);
    }
    if (PAD == 1) {
        if (!(s > T(0))) {
            s = T(0);
            dcoord = T(0);
        } else if (s >= T(size - 1)) {
            s = T(size - 1);
            dcoord = T(0);
        }
    } else {
        s = s < T(-2) ? T(-2) : (s > T(size + 1) ? T(size + 1) : s);
    }
    return s;
}

// Corner tables of pixels [p0, p0 + n) of one image's grid g (P, 2). Corner k (0 nw, 1 ne,
// 2 sw, 3 se) of pixel j reads plane offset idx[k][j] with weight w[k][j]; a corner outside
// the map gets offset 0 and weight 0. With gx/gy non-null, also the coefficients of the grid
// gradient: d out / d grid_x = sum_k gx[k][j] * v_k (v_k the corner values, 0 outside), the
// unnormalisation and clamp derivatives folded in; likewise gy.
template <class T, int PAD, bool AC>
inline void corner_tables(const T* __restrict__ g, idx_t n, idx_t Hi, idx_t Wi,
                          int* __restrict__ idx, T* __restrict__ w, T* __restrict__ gx, T* __restrict__ gy) {
    for (idx_t j = 0; j < n; j++) {
        T dsx, dsy;
        const T ix = source_coordinate<T, PAD, AC>(g[2 * j], Wi, dsx);
        const T iy = source_coordinate<T, PAD, AC>(g[2 * j + 1], Hi, dsy);
        const idx_t x0 = (idx_t)std::floor(ix), y0 = (idx_t)std::floor(iy);
        const T wx1 = ix - T(x0), wx0 = T(x0 + 1) - ix;    // PyTorch's (ix - ix_nw), (ix_se - ix)
        const T wy1 = iy - T(y0), wy0 = T(y0 + 1) - iy;
        const bool vx0 = x0 >= 0 && x0 < Wi, vx1 = x0 + 1 >= 0 && x0 + 1 < Wi;
        const bool vy0 = y0 >= 0 && y0 < Hi, vy1 = y0 + 1 >= 0 && y0 + 1 < Hi;
        const bool valid[4] = {vy0 && vx0, vy0 && vx1, vy1 && vx0, vy1 && vx1};
        const idx_t off[4] = {y0 * Wi + x0, y0 * Wi + x0 + 1, (y0 + 1) * Wi + x0, (y0 + 1) * Wi + x0 + 1};
        const T wt[4] = {wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1};
        // d(corner weight)/d(ix) and /d(iy), times the source coordinates' derivatives
        const T cx[4] = {-wy0 * dsx, wy0 * dsx, -wy1 * dsx, wy1 * dsx};
        const T cy[4] = {-wx0 * dsy, -wx1 * dsy, wx0 * dsy, wx1 * dsy};
        for (int k = 0; k < 4; k++) {
            idx[k * BLOCK + j] = valid[k] ? (int)off[k] : 0;
            if (w) w[k * BLOCK + j] = valid[k] ? wt[k] : T(0);
            if (gx) {
                gx[k * BLOCK + j] = valid[k] ? cx[k] : T(0);
                gy[k * BLOCK + j] = valid[k] ? cy[k] : T(0);
            }
        }
    }
}

// out (N, C, Ho, Wo) from input (N, C, Hi, Wi) and grid (N, Ho, Wo, 2).
// Parallel over (image, pixel block); the channel loop reuses the block's corner tables.
template <class T, int PAD, bool AC>
void forward(const T* __restrict__ in, const T* __restrict__ grid, T* __restrict__ out,
             idx_t N, idx_t C, idx_t Hi, idx_t Wi, idx_t Ho, idx_t Wo) {
    const idx_t P = Ho * Wo, nblocks = (P + BLOCK - 1) / BLOCK;
    #pragma omp parallel if (N * C * P > PAR_MIN_WORK)
    {
        std::vector<int> idx(4 * BLOCK);
        std::vector<T> w(4 * BLOCK);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < N * nblocks; task++) {
            const idx_t b = task / nblocks, p0 = (task % nblocks) * BLOCK;
            const idx_t n = P - p0 < BLOCK ? P - p0 : BLOCK;
            corner_tables<T, PAD, AC>(grid + (b * P + p0) * 2, n, Hi, Wi, idx.data(), w.data(),
                                      nullptr, nullptr);
            const int* __restrict__ i0 = idx.data();
            const int* __restrict__ i1 = i0 + BLOCK;
            const int* __restrict__ i2 = i0 + 2 * BLOCK;
            const int* __restrict__ i3 = i0 + 3 * BLOCK;
            const T* __restrict__ w0 = w.data();
            const T* __restrict__ w1 = w0 + BLOCK;
            const T* __restrict__ w2 = w0 + 2 * BLOCK;
            const T* __restrict__ w3 = w0 + 3 * BLOCK;
            for (idx_t c = 0; c < C; c++) {
                const T* __restrict__ plane = in + (b * C + c) * Hi * Wi;
                T* __restrict__ o = out + (b * C + c) * P + p0;
                for (idx_t j = 0; j < n; j++)
                    o[j] = plane[i0[j]] * w0[j] + plane[i1[j]] * w1[j] + plane[i2[j]] * w2[j]
                         + plane[i3[j]] * w3[j];
            }
        }
    }
}

// d input (N, C, Hi, Wi) from dout (N, C, Ho, Wo) and grid: the transpose of forward, a scatter.
// Parallel over (image, block of CBLOCK channels): each task owns its input-gradient planes, so
// no two threads write the same memory and the result does not depend on the thread count.
template <class T, int PAD, bool AC>
void grad_input(const T* __restrict__ dout, const T* __restrict__ grid, T* __restrict__ din,
                idx_t N, idx_t C, idx_t Hi, idx_t Wi, idx_t Ho, idx_t Wo) {
    const idx_t P = Ho * Wo, HWi = Hi * Wi, ncb = (C + CBLOCK - 1) / CBLOCK;
    #pragma omp parallel if (N * C * P > PAR_MIN_WORK)
    {
        std::vector<int> idx(4 * BLOCK);
        std::vector<T> w(4 * BLOCK);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < N * ncb; task++) {
            const idx_t b = task / ncb, c0 = (task % ncb) * CBLOCK;
            const idx_t c1 = c0 + CBLOCK < C ? c0 + CBLOCK : C;
            T* __restrict__ planes = din + (b * C + c0) * HWi;
            for (idx_t t = 0; t < (c1 - c0) * HWi; t++) planes[t] = T(0);
            for (idx_t p0 = 0; p0 < P; p0 += BLOCK) {
                const idx_t n = P - p0 < BLOCK ? P - p0 : BLOCK;
                corner_tables<T, PAD, AC>(grid + (b * P + p0) * 2, n, Hi, Wi, idx.data(), w.data(),
                                          nullptr, nullptr);
                const int* i0 = idx.data();
                const T* w0 = w.data();
                for (idx_t c = c0; c < c1; c++) {
                    T* d = din + (b * C + c) * HWi;
                    const T* __restrict__ go = dout + (b * C + c) * P + p0;
                    for (idx_t j = 0; j < n; j++) {
                        const T v = go[j];
                        d[i0[j]] += w0[j] * v;
                        d[i0[BLOCK + j]] += w0[BLOCK + j] * v;
                        d[i0[2 * BLOCK + j]] += w0[2 * BLOCK + j] * v;
                        d[i0[3 * BLOCK + j]] += w0[3 * BLOCK + j] * v;
                    }
                }
            }
        }
    }
}

// d grid (N, Ho, Wo, 2) from dout (N, C, Ho, Wo), input and grid: per pixel, the sum over
// channels of dout times the corner values weighted by the weights' derivatives.
// Parallel over (image, pixel block), as forward.
template <class T, int PAD, bool AC>
void grad_grid(const T* __restrict__ dout, const T* __restrict__ in, const T* __restrict__ grid,
               T* __restrict__ dgrid, idx_t N, idx_t C, idx_t Hi, idx_t Wi, idx_t Ho, idx_t Wo) {
    const idx_t P = Ho * Wo, nblocks = (P + BLOCK - 1) / BLOCK;
    #pragma omp parallel if (N * C * P > PAR_MIN_WORK)
    {
        std::vector<int> idx(4 * BLOCK);
        std::vector<T> cx(4 * BLOCK), cy(4 * BLOCK), ax(BLOCK), ay(BLOCK);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < N * nblocks; task++) {
            const idx_t b = task / nblocks, p0 = (task % nblocks) * BLOCK;
            const idx_t n = P - p0 < BLOCK ? P - p0 : BLOCK;
            corner_tables<T, PAD, AC>(grid + (b * P + p0) * 2, n, Hi, Wi, idx.data(), nullptr,
                                      cx.data(), cy.data());
            const int* __restrict__ i0 = idx.data();
            const int* __restrict__ i1 = i0 + BLOCK;
            const int* __restrict__ i2 = i0 + 2 * BLOCK;
            const int* __restrict__ i3 = i0 + 3 * BLOCK;
            const T* __restrict__ x0 = cx.data();
            const T* __restrict__ y0 = cy.data();
            T* __restrict__ sx = ax.data();
            T* __restrict__ sy = ay.data();
            for (idx_t j = 0; j < n; j++) { sx[j] = T(0); sy[j] = T(0); }
            for (idx_t c = 0; c < C; c++) {
                const T* __restrict__ plane = in + (b * C + c) * Hi * Wi;
                const T* __restrict__ go = dout + (b * C + c) * P + p0;
                for (idx_t j = 0; j < n; j++) {
                    const T v0 = plane[i0[j]], v1 = plane[i1[j]], v2 = plane[i2[j]], v3 = plane[i3[j]];
                    sx[j] += go[j] * (v0 * x0[j] + v1 * x0[BLOCK + j] + v2 * x0[2 * BLOCK + j]
                                      + v3 * x0[3 * BLOCK + j]);
                    sy[j] += go[j] * (v0 * y0[j] + v1 * y0[BLOCK + j] + v2 * y0[2 * BLOCK + j]
                                      + v3 * y0[3 * BLOCK + j]);
                }
            }
            T* __restrict__ dg = dgrid + (b * P + p0) * 2;
            for (idx_t j = 0; j < n; j++) { dg[2 * j] = sx[j]; dg[2 * j + 1] = sy[j]; }
        }
    }
}
}  // namespace jseg_grid_sample

#endif  // JSEG_GRID_SAMPLE_CPU_CC
