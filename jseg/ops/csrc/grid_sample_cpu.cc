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

// Output pixels per block: the block's tap tables (an int32 offset and 4 weights per pixel, 8
// coefficients for the grid gradient) are computed once and reused by every channel.
#ifndef JSEG_GRID_SAMPLE_BLOCK
#define JSEG_GRID_SAMPLE_BLOCK 1024
#endif
constexpr idx_t BLOCK = JSEG_GRID_SAMPLE_BLOCK;
// Channels that share one pass over a block's tap tables in the forward and grid-gradient
// kernels (fewer table loads per tap; 2 measured 15-25% faster than 1 on AVX2, 4 no better).
constexpr int CPAIR = 2;
// Channels per task of the input-gradient kernel: the tap tables of a block are computed once
// per CBLOCK channels.
constexpr idx_t CBLOCK = 8;
// Bilinear taps (pixel x channel; about 1 ns each on one AVX2 core) below which one thread does
// all the work: a parallel region can wait a whole scheduler time slice for a second core on a
// busy machine, which made 1 ms calls take 20-40 ms in the benchmark on a loaded machine.
constexpr idx_t PAR_MIN_WORK = 1 << 21;

// The tap loops read 4 pixels at per-pixel offsets. Vectorised, they become gather
// instructions, which g++ chooses for some of them and which ran them 2x slower than scalar
// loads on AVX2 (AMD Zen 3); scalar loads are the safe choice, so g++ is told not to vectorise
// those functions.
#if defined(__GNUC__) && !defined(__clang__)
#define JSEG_SCALAR_LOADS __attribute__((optimize("no-tree-vectorize")))
#else
#define JSEG_SCALAR_LOADS
#endif

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

// The two taps of source coordinate s along an axis of `size` pixels, as a pair that always
// lies inside the axis: pixels a and a + step (step = 1, or 0 when size == 1) with weights
// wa, wb, and the weights' derivatives da, db w.r.t. s times ds. The bilinear taps
// x0 = floor(s) and x0 + 1 (weights x0 + 1 - s and s - x0, PyTorch's) move into the pair; a
// tap outside the axis gets weight 0 (zero padding).
template <class T>
inline void axis_taps(T s, T ds, idx_t size, idx_t& a, T& wa, T& wb, T& da, T& db) {
    const idx_t x0 = (idx_t)std::floor(s);
    const T w1 = s - T(x0), w0 = T(x0 + 1) - s;
    if (x0 >= 0 && x0 + 1 < size) {           // both taps inside
        a = x0; wa = w0; wb = w1; da = -ds; db = ds;
    } else if (x0 == -1) {                    // only x0 + 1 = 0 inside: it is the pair's first pixel
        a = 0; wa = w1; wb = T(0); da = ds; db = T(0);
    } else if (x0 == size - 1) {              // only x0 = size - 1 inside: the pair's last pixel
        if (size > 1) { a = size - 2; wa = T(0); wb = w0; da = T(0); db = -ds; }
        else { a = 0; wa = w0; wb = T(0); da = -ds; db = T(0); }
    } else {                                  // both outside
        a = 0; wa = T(0); wb = T(0); da = T(0); db = T(0);
    }
}

// Tap tables of pixels [0, n) of a block with grid g (n, 2). Pixel j reads the input plane at
// offsets off[j] + {0, sx, sy, sy + sx} (sx = 1 or 0 when Wi == 1, sy = Wi or 0 when Hi == 1)
// with weights wx[j]*wy[j], wx[B+j]*wy[j], wx[j]*wy[B+j], wx[B+j]*wy[B+j] (B = BLOCK). With dx
// non-null, dx/dy hold the x/y weights' derivatives w.r.t. the grid coordinates (the
// unnormalisation and clamp derivatives folded in).
template <class T, int PAD, bool AC>
inline void tap_tables(const T* __restrict__ g, idx_t n, idx_t Hi, idx_t Wi, int* __restrict__ off,
                       T* __restrict__ wx, T* __restrict__ wy, T* __restrict__ dx, T* __restrict__ dy) {
    for (idx_t j = 0; j < n; j++) {
        T dsx, dsy;
        const T ix = source_coordinate<T, PAD, AC>(g[2 * j], Wi, dsx);
        const T iy = source_coordinate<T, PAD, AC>(g[2 * j + 1], Hi, dsy);
        idx_t xa, ya;
        T dxa, dxb, dya, dyb;
        axis_taps(ix, dsx, Wi, xa, wx[j], wx[BLOCK + j], dxa, dxb);
        axis_taps(iy, dsy, Hi, ya, wy[j], wy[BLOCK + j], dya, dyb);
        off[j] = (int)(ya * Wi + xa);
        if (dx) {
            dx[j] = dxa; dx[BLOCK + j] = dxb;
            dy[j] = dya; dy[BLOCK + j] = dyb;
        }
    }
}

// Per-thread tap tables of one block.
template <class T>
struct Tables {
    std::vector<int> off;
    std::vector<T> wx, wy, dx, dy;
    explicit Tables(bool derivatives)
        : off(BLOCK), wx(2 * BLOCK), wy(2 * BLOCK), dx(derivatives ? 2 * BLOCK : 0), dy(derivatives ? 2 * BLOCK : 0) {}
};

// U consecutive channels of one block: planes at in + u*HWi, outputs at o + u*P.
template <class T, int U>
JSEG_SCALAR_LOADS void forward_channels(const T* __restrict__ in, T* __restrict__ o, const Tables<T>& t, idx_t n,
                                        idx_t HWi, idx_t P, idx_t sx, idx_t sy) {
    const int* __restrict__ off = t.off.data();
    const T* __restrict__ wxa = t.wx.data();
    const T* __restrict__ wxb = wxa + BLOCK;
    const T* __restrict__ wya = t.wy.data();
    const T* __restrict__ wyb = wya + BLOCK;
    for (idx_t j = 0; j < n; j++) {
        const T a = wxa[j], b = wxb[j], ya = wya[j], yb = wyb[j];
        const T* q = in + off[j];
        #pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            const T* r = q + u * HWi;
            o[u * P + j] = (r[0] * a + r[sx] * b) * ya + (r[sy] * a + r[sy + sx] * b) * yb;
        }
    }
}

// out (N, C, Ho, Wo) from input (N, C, Hi, Wi) and grid (N, Ho, Wo, 2).
// Parallel over (image, pixel block); the channel loop reuses the block's tap tables.
template <class T, int PAD, bool AC>
void forward(const T* __restrict__ in, const T* __restrict__ grid, T* __restrict__ out,
             idx_t N, idx_t C, idx_t Hi, idx_t Wi, idx_t Ho, idx_t Wo) {
    const idx_t P = Ho * Wo, nblocks = (P + BLOCK - 1) / BLOCK;
    const idx_t sx = Wi > 1 ? 1 : 0, sy = Hi > 1 ? Wi : 0;
    #pragma omp parallel if (N * C * P > PAR_MIN_WORK)
    {
        Tables<T> t(false);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < N * nblocks; task++) {
            const idx_t b = task / nblocks, p0 = (task % nblocks) * BLOCK;
            const idx_t n = P - p0 < BLOCK ? P - p0 : BLOCK;
            tap_tables<T, PAD, AC>(grid + (b * P + p0) * 2, n, Hi, Wi, t.off.data(), t.wx.data(), t.wy.data(),
                                   nullptr, nullptr);
            idx_t c = 0;
            for (; c + CPAIR <= C; c += CPAIR)
                forward_channels<T, CPAIR>(in + (b * C + c) * Hi * Wi, out + (b * C + c) * P + p0, t, n, Hi * Wi, P,
                                           sx, sy);
            for (; c < C; c++)
                forward_channels<T, 1>(in + (b * C + c) * Hi * Wi, out + (b * C + c) * P + p0, t, n, Hi * Wi, P,
                                       sx, sy);
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
    const idx_t sx = Wi > 1 ? 1 : 0, sy = Hi > 1 ? Wi : 0;
    #pragma omp parallel if (N * C * P > PAR_MIN_WORK)
    {
        Tables<T> t(false);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < N * ncb; task++) {
            const idx_t b = task / ncb, c0 = (task % ncb) * CBLOCK;
            const idx_t c1 = c0 + CBLOCK < C ? c0 + CBLOCK : C;
            T* __restrict__ planes = din + (b * C + c0) * HWi;
            for (idx_t i = 0; i < (c1 - c0) * HWi; i++) planes[i] = T(0);
            for (idx_t p0 = 0; p0 < P; p0 += BLOCK) {
                const idx_t n = P - p0 < BLOCK ? P - p0 : BLOCK;
                tap_tables<T, PAD, AC>(grid + (b * P + p0) * 2, n, Hi, Wi, t.off.data(), t.wx.data(), t.wy.data(),
                                       nullptr, nullptr);
                const int* off = t.off.data();
                const T* wxa = t.wx.data();
                const T* wya = t.wy.data();
                for (idx_t c = c0; c < c1; c++) {
                    T* d = din + (b * C + c) * HWi;
                    const T* __restrict__ go = dout + (b * C + c) * P + p0;
                    for (idx_t j = 0; j < n; j++) {
                        T* q = d + off[j];
                        const T top = go[j] * wya[j], bottom = go[j] * wya[BLOCK + j];
                        q[0] += top * wxa[j];
                        q[sx] += top * wxa[BLOCK + j];
                        q[sy] += bottom * wxa[j];
                        q[sy + sx] += bottom * wxa[BLOCK + j];
                    }
                }
            }
        }
    }
}

// U consecutive channels of one block added to the block's grid gradients gx, gy: dout rows at
// go + u*P, input planes at in + u*HWi.
template <class T, int U>
JSEG_SCALAR_LOADS void grid_channels(const T* __restrict__ go, const T* __restrict__ in, T* __restrict__ gx,
                                     T* __restrict__ gy, const Tables<T>& t, idx_t n, idx_t HWi, idx_t P, idx_t sx,
                                     idx_t sy) {
    const int* __restrict__ off = t.off.data();
    const T* __restrict__ wxa = t.wx.data();
    const T* __restrict__ wxb = wxa + BLOCK;
    const T* __restrict__ wya = t.wy.data();
    const T* __restrict__ wyb = wya + BLOCK;
    const T* __restrict__ dxa = t.dx.data();
    const T* __restrict__ dxb = dxa + BLOCK;
    const T* __restrict__ dya = t.dy.data();
    const T* __restrict__ dyb = dya + BLOCK;
    for (idx_t j = 0; j < n; j++) {
        const T a = wxa[j], b = wxb[j], ya = wya[j], yb = wyb[j];
        const T da = dxa[j], db = dxb[j], ea = dya[j], eb = dyb[j];
        const T* q = in + off[j];
        T sx_ = T(0), sy_ = T(0);
        #pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            const T* r = q + u * HWi;
            const T v00 = r[0], v01 = r[sx], v10 = r[sy], v11 = r[sy + sx], g = go[u * P + j];
            sx_ += g * ((v00 * da + v01 * db) * ya + (v10 * da + v11 * db) * yb);
            sy_ += g * ((v00 * a + v01 * b) * ea + (v10 * a + v11 * b) * eb);
        }
        gx[j] += sx_;
        gy[j] += sy_;
    }
}

// d grid (N, Ho, Wo, 2) from dout (N, C, Ho, Wo), input and grid: per pixel, the sum over
// channels of dout times the interpolation with the x (or y) weights replaced by their
// derivatives. Parallel over (image, pixel block), as forward.
template <class T, int PAD, bool AC>
void grad_grid(const T* __restrict__ dout, const T* __restrict__ in, const T* __restrict__ grid,
               T* __restrict__ dgrid, idx_t N, idx_t C, idx_t Hi, idx_t Wi, idx_t Ho, idx_t Wo) {
    const idx_t P = Ho * Wo, nblocks = (P + BLOCK - 1) / BLOCK;
    const idx_t sx = Wi > 1 ? 1 : 0, sy = Hi > 1 ? Wi : 0;
    #pragma omp parallel if (N * C * P > PAR_MIN_WORK)
    {
        Tables<T> t(true);
        std::vector<T> acc(2 * BLOCK);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < N * nblocks; task++) {
            const idx_t b = task / nblocks, p0 = (task % nblocks) * BLOCK;
            const idx_t n = P - p0 < BLOCK ? P - p0 : BLOCK;
            tap_tables<T, PAD, AC>(grid + (b * P + p0) * 2, n, Hi, Wi, t.off.data(), t.wx.data(), t.wy.data(),
                                   t.dx.data(), t.dy.data());
            T* __restrict__ gx = acc.data();
            T* __restrict__ gy = gx + BLOCK;
            for (idx_t j = 0; j < n; j++) { gx[j] = T(0); gy[j] = T(0); }
            idx_t c = 0;
            for (; c + CPAIR <= C; c += CPAIR)
                grid_channels<T, CPAIR>(dout + (b * C + c) * P + p0, in + (b * C + c) * Hi * Wi, gx, gy, t, n,
                                        Hi * Wi, P, sx, sy);
            for (; c < C; c++)
                grid_channels<T, 1>(dout + (b * C + c) * P + p0, in + (b * C + c) * Hi * Wi, gx, gy, t, n, Hi * Wi, P,
                                    sx, sy);
            T* __restrict__ dg = dgrid + (b * P + p0) * 2;
            for (idx_t j = 0; j < n; j++) { dg[2 * j] = gx[j]; dg[2 * j + 1] = gy[j]; }
        }
    }
}
}  // namespace jseg_grid_sample

#endif  // JSEG_GRID_SAMPLE_CPU_CC
