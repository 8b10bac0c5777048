// CARAFE per-element arithmetic, shared by the CUDA kernels (carafe_cuda.cu) and the CPU
// 'elementwise' operators (carafe_cpu.cc), so that the CPU tests run the CUDA kernels' sums.
//
// Layouts (row-major): features f (B, C, h, w); masks m (B, G*KS*KS, H, W) with H = h*SC,
// W = w*SC; out and dout (B, C, H, W). KS: kernel size (odd), SC: scale factor, R = (KS-1)/2,
// channel group g(c) = c / (C / G). See jseg/ops/carafe_kernel.py.
#ifndef JSEG_CARAFE_H
#define JSEG_CARAFE_H

#include "host_device.h"

namespace jseg_carafe {
typedef long long idx_t;

// out[b, c, Y, X] = sum_{i, j < KS} m[b, g(c)*KS*KS + i*KS + j, Y, X] * f[b, c, Y/SC + i - R, X/SC + j - R],
// taps outside the feature map skipped (zero padding); row-major tap order.
template <class T, int KS, int SC>
JSEG_HD T fwd_at(const T* f, const T* m, idx_t b, idx_t c, idx_t Y, idx_t X,
                 idx_t C, idx_t h, idx_t w, idx_t G) {
    const int R = (KS - 1) / 2;
    const idx_t H = h * SC, W = w * SC, g = c / (C / G);
    const idx_t y0 = Y / SC - R, x0 = X / SC - R;
    const T* mp = m + ((b * G + g) * KS * KS) * H * W + Y * W + X;
    const T* fp = f + (b * C + c) * h * w;
    T acc = T(0);
    for (int i = 0; i < KS; i++) {
        const idx_t sy = y0 + i;
        if (sy < 0 || sy >= h) continue;
        for (int j = 0; j < KS; j++) {
            const idx_t sx = x0 + j;
            if (sx < 0 || sx >= w) continue;
            acc += mp[(idx_t)(i * KS + j) * H * W] * fp[sy * w + sx];
        }
    }
    return acc;
}

// d loss / d f[b, c, y, x]: gather over the output pixels that read f[b, c, y, x].
template <class T, int KS, int SC>
JSEG_HD T dfeat_at(const T* dout, const T* m, idx_t b, idx_t c, idx_t y, idx_t x,
                   idx_t C, idx_t h, idx_t w, idx_t G) {
    const int R = (KS - 1) / 2;
    const idx_t H = h * SC, W = w * SC, g = c / (C / G);
    const T* mp = m + ((b * G + g) * KS * KS) * H * W;
    const T* dp = dout + (b * C + c) * H * W;
    T acc = T(0);
    for (int i = 0; i < KS; i++) {
        const idx_t yy = y - i + R;          // low-resolution output row whose tap i reads row y
        if (yy < 0 || yy >= h) continue;
        for (int j = 0; j < KS; j++) {
            const idx_t xx = x - j + R;
            if (xx < 0 || xx >= w) continue;
            const T* mt = mp + (idx_t)(i * KS + j) * H * W;
            for (int py = 0; py < SC; py++) {
                const idx_t Y = yy * SC + py;
                for (int px = 0; px < SC; px++) {
                    const idx_t X = xx * SC + px;
                    acc += mt[Y * W + X] * dp[Y * W + X];
                }
            }
        }
    }
    return acc;
}

// d loss / d m[b, g*KS*KS + tap, Y, X]: sum over the channels of group g.
template <class T, int KS, int SC>
JSEG_HD T dmask_at(const T* dout, const T* f, idx_t b, idx_t g, int tap, idx_t Y, idx_t X,
                   idx_t C, idx_t h, idx_t w, idx_t G) {
    const int R = (KS - 1) / 2;
    const idx_t H = h * SC, W = w * SC, cpg = C / G;
    const idx_t sy = Y / SC - R + tap / KS, sx = X / SC - R + tap % KS;
    if (sy < 0 || sy >= h || sx < 0 || sx >= w) return T(0);
    T acc = T(0);
    for (idx_t c = g * cpg; c < (g + 1) * cpg; c++)
        acc += dout[((b * C + c) * H + Y) * W + X] * f[((b * C + c) * h + sy) * w + sx];
    return acc;
}

// Flat output index n -> (b, c, Y, X) of a (B, C, H, W) tensor, and the like: the enumeration
// shared by the CUDA grid-stride loops and the CPU 'elementwise' loops.
JSEG_HD void unflatten4(idx_t n, idx_t d1, idx_t d2, idx_t d3, idx_t& i0, idx_t& i1, idx_t& i2, idx_t& i3) {
    i3 = n % d3;
    i2 = (n / d3) % d2;
    i1 = (n / (d3 * d2)) % d1;
    i0 = n / (d3 * d2 * d1);
}

// One element of each operator at flat index n (what one CUDA thread computes).
template <class T, int KS, int SC>
JSEG_HD T fwd_element(const T* f, const T* m, idx_t n, idx_t C, idx_t h, idx_t w, idx_t G) {
    idx_t b, c, Y, X;
    unflatten4(n, C, h * SC, w * SC, b, c, Y, X);
    return fwd_at<T, KS, SC>(f, m, b, c, Y, X, C, h, w, G);
}

template <class T, int KS, int SC>
JSEG_HD T dfeat_element(const T* dout, const T* m, idx_t n, idx_t C, idx_t h, idx_t w, idx_t G) {
    idx_t b, c, y, x;
    unflatten4(n, C, h, w, b, c, y, x);
    return dfeat_at<T, KS, SC>(dout, m, b, c, y, x, C, h, w, G);
}

template <class T, int KS, int SC>
JSEG_HD T dmask_element(const T* dout, const T* f, idx_t n, idx_t C, idx_t h, idx_t w, idx_t G) {
    idx_t b, ch, Y, X;
    unflatten4(n, G * KS * KS, h * SC, w * SC, b, ch, Y, X);
    return dmask_at<T, KS, SC>(dout, f, b, ch / (KS * KS), (int)(ch % (KS * KS)), Y, X, C, h, w, G);
}
}  // namespace jseg_carafe

#endif  // JSEG_CARAFE_H
