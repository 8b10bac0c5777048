// Multi-scale deformable attention: per-sample bilinear arithmetic shared by the
// CPU kernels (ms_deform_attn_cpu.h) and the CUDA kernels (ms_deform_attn_cuda.cuh).
//
// Layouts (row-major): value (B, S, nH, D) with the L levels concatenated along
// S; sampling locations (B, Lq, nH, L, P, 2) as normalised (x, y); attention
// weights (B, Lq, nH, L, P); output (B, Lq, nH*D).
//
// A sample at normalised (x, y) on a level of size (H, W) reads the map at pixel
// coordinates (x*W - 0.5, y*H - 0.5) (grid_sample, align_corners=False) by
// bilinear interpolation of its four neighbours; neighbours outside the map read
// zero. As in mmcv's kernels, a sample whose coordinates are not inside
// (-1, H) x (-1, W) is skipped: all four neighbours lie outside the map there.
#ifndef JSEG_MS_DEFORM_ATTN_COMMON_H
#define JSEG_MS_DEFORM_ATTN_COMMON_H

#include <math.h>

#ifdef __CUDACC__
#define JSEG_MSDA_HD __host__ __device__ __forceinline__
#else
#define JSEG_MSDA_HD inline
#endif

namespace jseg_msda {

typedef long long idx_t;

// Most pyramid levels a call may have (the Python wrapper checks it).
constexpr int MAX_LEVELS = 16;

// Level sizes and the offset of each level's first position along S.
struct Levels {
    int count;
    int height[MAX_LEVELS];
    int width[MAX_LEVELS];
    idx_t start[MAX_LEVELS];
};

JSEG_MSDA_HD int floor_to_int(float v) { return (int)floorf(v); }
JSEG_MSDA_HD int floor_to_int(double v) { return (int)floor(v); }

// The four neighbours of one sample, in the order (y0, x0), (y0, x0+1),
// (y0+1, x0), (y0+1, x0+1).
template <class T>
struct Corners {
    idx_t pixel[4];   // y*W + x inside the level, or -1 when the neighbour is outside the map
    T weight[4];      // bilinear weight of each neighbour
    T dweight_dx[4];  // d weight / d (pixel x coordinate)
    T dweight_dy[4];  // d weight / d (pixel y coordinate)
};

// Fills `c` for the sample at normalised (loc_x, loc_y) on a level of size
// (height, width). Returns false when the sample reads nothing (it is outside
// (-1, H) x (-1, W) in pixel coordinates, or NaN).
template <class T>
JSEG_MSDA_HD bool sample_corners(T loc_x, T loc_y, int height, int width, Corners<T>& c) {
    const T x = loc_x * T(width) - T(0.5);
    const T y = loc_y * T(height) - T(0.5);
    if (!(y > T(-1) && x > T(-1) && y < T(height) && x < T(width))) return false;
    const int x0 = floor_to_int(x), y0 = floor_to_int(y);
    const T lx = x - T(x0), ly = y - T(y0);
    const T hx = T(1) - lx, hy = T(1) - ly;
    const bool x0_in = x0 >= 0, x1_in = x0 + 1 <= width - 1;
    const bool y0_in = y0 >= 0, y1_in = y0 + 1 <= height - 1;
    const idx_t row0 = (idx_t)y0 * width, row1 = row0 + width;
    c.pixel[0] = (y0_in && x0_in) ? row0 + x0 : -1;
    c.pixel[1] = (y0_in && x1_in) ? row0 + x0 + 1 : -1;
    c.pixel[2] = (y1_in && x0_in) ? row1 + x0 : -1;
    c.pixel[3] = (y1_in && x1_in) ? row1 + x0 + 1 : -1;
    c.weight[0] = hy * hx; c.dweight_dx[0] = -hy; c.dweight_dy[0] = -hx;
    c.weight[1] = hy * lx; c.dweight_dx[1] = hy;  c.dweight_dy[1] = -lx;
    c.weight[2] = ly * hx; c.dweight_dx[2] = -ly; c.dweight_dy[2] = hx;
    c.weight[3] = ly * lx; c.dweight_dx[3] = ly;  c.dweight_dy[3] = lx;
    return true;
}

// Offset of value[b, start + pixel, head, 0].
JSEG_MSDA_HD idx_t value_offset(idx_t b, idx_t pos, idx_t head, idx_t S, idx_t nH, idx_t D) {
    return ((b * S + pos) * nH + head) * D;
}

// Gradients of one sample, given the output gradient g[d] of its (b, q, head):
// with dot_k = sum_d g[d] * value_k[d] over the four neighbours k,
//   d attention weight = sum_k weight_k * dot_k,
//   d loc_x = W * a * sum_k dweight_dx_k * dot_k,  d loc_y = H * a * sum_k dweight_dy_k * dot_k,
// and value_k[d] receives a * weight_k * g[d].
template <class T>
JSEG_MSDA_HD void sample_gradients(const Corners<T>& c, const T dot[4], T attn, int height, int width,
                                   T* grad_loc_x, T* grad_loc_y, T* grad_attn) {
    T ga = T(0), gx = T(0), gy = T(0);
    for (int k = 0; k < 4; k++) {
        ga += c.weight[k] * dot[k];
        gx += c.dweight_dx[k] * dot[k];
        gy += c.dweight_dy[k] * dot[k];
    }
    *grad_attn = ga;
    *grad_loc_x = T(width) * attn * gx;
    *grad_loc_y = T(height) * attn * gy;
}

}  // namespace jseg_msda

#endif  // JSEG_MS_DEFORM_ATTN_COMMON_H
