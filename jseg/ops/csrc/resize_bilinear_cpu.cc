// Bilinear resize of (P, h, w) planes to (P, H, W) on the CPU, forward and backward (PyTorch's
// and Jittor's coordinate maths). Called from the cpu_src of the jt.code operators in
// jseg/ops/resize_bilinear.py, where the algorithm is described. Every function writes all of
// its output (Jittor does not zero outputs).
#ifndef JSEG_RESIZE_BILINEAR_CPU_CC
#define JSEG_RESIZE_BILINEAR_CPU_CC

#include <algorithm>
#include <vector>

namespace jseg_resize {
typedef long long idx_t;

// Output elements (about a millisecond on one core) below which one thread does it all: a
// parallel region can wait a whole scheduler time slice for a second core on a busy machine.
constexpr long long PAR_MIN_WORK = 1 << 20;
// Rows of one parallel task: whole planes are split into blocks of this many output rows
// (forward) or input rows (backward) so that a few large planes still keep every thread busy.
constexpr idx_t ROW_BLOCK = 64;

// The two source taps of every destination index along one axis: destination i reads source
// i0[i] with weight w0[i] and source i1[i] (i0[i] or i0[i] + 1) with weight w1[i].
template <class T>
struct AxisTaps {
    std::vector<idx_t> i0, i1;
    std::vector<T> w0, w1;

    // PyTorch's area_pixel_compute_scale / area_pixel_compute_source_index (T arithmetic):
    //   align_corners: src = d * (in - 1) / (out - 1)   (0 when out == 1)
    //   otherwise:     src = max((d + 0.5) * in / out - 0.5, 0)
    // then i0 = floor(src) (clamped to in - 1), i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1.
    AxisTaps(idx_t in, idx_t out, bool align_corners) : i0(out), i1(out), w0(out), w1(out) {
        const T scale = align_corners ? (out > 1 ? T(in - 1) / T(out - 1) : T(0)) : T(in) / T(out);
        for (idx_t d = 0; d < out; d++) {
            T src = align_corners ? scale * T(d) : scale * (T(d) + T(0.5)) - T(0.5);
            if (src < T(0)) src = T(0);
            const idx_t lo = std::min((idx_t)src, in - 1);
            i0[d] = lo;
            i1[d] = lo < in - 1 ? lo + 1 : lo;
            w1[d] = src - T(lo);
            w0[d] = T(1) - w1[d];
        }
    }
};

// The transpose of an AxisTaps in gather form (compressed rows): source s receives from the
// destinations dst[k] with weights wt[k] for k in [start[s], start[s + 1]), destinations in
// increasing order; a destination whose two taps are the same source appears once, with the
// sum of both weights. Sources nothing reads get an empty range.
template <class T>
struct AxisGather {
    std::vector<idx_t> start, dst;
    std::vector<T> wt;

    AxisGather(const AxisTaps<T>& taps, idx_t in) : start(in + 1, 0) {
        const idx_t out = (idx_t)taps.i0.size();
        for (idx_t d = 0; d < out; d++) {
            start[taps.i0[d] + 1]++;
            if (taps.i1[d] != taps.i0[d]) start[taps.i1[d] + 1]++;
        }
        for (idx_t s = 0; s < in; s++) start[s + 1] += start[s];
        dst.resize(start[in]);
        wt.resize(start[in]);
        std::vector<idx_t> fill(start.begin(), start.end() - 1);
        for (idx_t d = 0; d < out; d++) {
            const idx_t a = taps.i0[d], b = taps.i1[d];
            if (a == b) {
                dst[fill[a]] = d; wt[fill[a]++] = taps.w0[d] + taps.w1[d];
            } else {
                dst[fill[a]] = d; wt[fill[a]++] = taps.w0[d];
                dst[fill[b]] = d; wt[fill[b]++] = taps.w1[d];
            }
        }
    }
};

// One source row interpolated along x: r[X] = w0[X] * src[i0[X]] + w1[X] * src[i1[X]].
template <class T>
inline void interpolate_row(const T* __restrict__ src, const AxisTaps<T>& tx, T* __restrict__ r, idx_t W) {
    const idx_t* __restrict__ i0 = tx.i0.data();
    const idx_t* __restrict__ i1 = tx.i1.data();
    const T* __restrict__ w0 = tx.w0.data();
    const T* __restrict__ w1 = tx.w1.data();
    for (idx_t X = 0; X < W; X++) r[X] = w0[X] * src[i0[X]] + w1[X] * src[i1[X]];
}

// out (P, H, W) from in (P, h, w). Parallel over (plane, block of ROW_BLOCK output rows); each
// task keeps the last two x-interpolated source rows, so every source row it needs is
// interpolated once, and each output row is a blend of two of them (contiguous, vectorised).
template <class T>
void forward(const T* __restrict__ in, T* __restrict__ out, idx_t P, idx_t h, idx_t w, idx_t H, idx_t W,
             bool align_corners) {
    const AxisTaps<T> ty(h, H, align_corners), tx(w, W, align_corners);
    const idx_t blocks = (H + ROW_BLOCK - 1) / ROW_BLOCK;
    #pragma omp parallel if (P * H * W > PAR_MIN_WORK)
    {
        std::vector<T> buf(2 * W);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < P * blocks; task++) {
            const idx_t p = task / blocks, Y0 = (task % blocks) * ROW_BLOCK;
            const idx_t Y1 = std::min(H, Y0 + ROW_BLOCK);
            const T* plane = in + p * h * w;
            idx_t held[2] = {-1, -1};   // the source row in each half of buf
            auto slot_of = [&](idx_t y) { return held[0] == y ? 0 : (held[1] == y ? 1 : -1); };
            auto fill = [&](int s, idx_t y) {
                interpolate_row(plane + y * w, tx, buf.data() + s * W, W);
                held[s] = y;
            };
            for (idx_t Y = Y0; Y < Y1; Y++) {
                const idx_t a = ty.i0[Y], b = ty.i1[Y];
                int sa = slot_of(a), sb = slot_of(b);
                if (sa < 0) {
                    sa = sb == 0 ? 1 : 0;
                    fill(sa, a);
                }
                if (b == a) {
                    sb = sa;
                } else if (sb < 0) {
                    sb = 1 - sa;
                    fill(sb, b);
                }
                const T* __restrict__ ra = buf.data() + sa * W;
                const T* __restrict__ rb = buf.data() + sb * W;
                const T wa = ty.w0[Y], wb = ty.w1[Y];
                T* __restrict__ o = out + (p * H + Y) * W;
                for (idx_t X = 0; X < W; X++) o[X] = wa * ra[X] + wb * rb[X];
            }
        }
    }
}

// d in (P, h, w) from d out (P, H, W): the transpose of forward, as a gather (no two threads
// write the same element; no atomics). Parallel over (plane, block of ROW_BLOCK source rows):
// source row y first sums the output-gradient rows that read it, with their y weights
// (contiguous, vectorised), into a row of length W, then gathers that row along x.
template <class T>
void backward(const T* __restrict__ dout, T* __restrict__ din, idx_t P, idx_t h, idx_t w, idx_t H, idx_t W,
              bool align_corners) {
    const AxisTaps<T> ty(h, H, align_corners), tx(w, W, align_corners);
    const AxisGather<T> gy(ty, h), gx(tx, w);
    const idx_t blocks = (h + ROW_BLOCK - 1) / ROW_BLOCK;
    #pragma omp parallel if (P * H * W > PAR_MIN_WORK)
    {
        std::vector<T> buf(W);
        #pragma omp for schedule(static)
        for (idx_t task = 0; task < P * blocks; task++) {
            const idx_t p = task / blocks, y0 = (task % blocks) * ROW_BLOCK;
            const idx_t y1 = std::min(h, y0 + ROW_BLOCK);
            const T* gplane = dout + p * H * W;
            T* __restrict__ acc = buf.data();
            for (idx_t y = y0; y < y1; y++) {
                T* __restrict__ d = din + (p * h + y) * w;
                const idx_t k0 = gy.start[y], k1 = gy.start[y + 1];
                if (k0 == k1) {
                    for (idx_t x = 0; x < w; x++) d[x] = T(0);
                    continue;
                }
                {
                    const T* __restrict__ g = gplane + gy.dst[k0] * W;
                    const T wk = gy.wt[k0];
                    for (idx_t X = 0; X < W; X++) acc[X] = wk * g[X];
                }
                for (idx_t k = k0 + 1; k < k1; k++) {
                    const T* __restrict__ g = gplane + gy.dst[k] * W;
                    const T wk = gy.wt[k];
                    for (idx_t X = 0; X < W; X++) acc[X] += wk * g[X];
                }
                for (idx_t x = 0; x < w; x++) {
                    T v = T(0);
                    for (idx_t k = gx.start[x]; k < gx.start[x + 1]; k++) v += gx.wt[k] * acc[gx.dst[k]];
                    d[x] = v;
                }
            }
        }
    }
}
}  // namespace jseg_resize

#endif  // JSEG_RESIZE_BILINEAR_CPU_CC
