// Batch and group normalisation on the CPU (jseg/ops/norm.py): the per-row passes.
//
// The input is viewed as R contiguous rows of S elements: row r = (b, c) of a (B, C, *) tensor,
// S the product of the spatial sizes. A normalisation group is a set of rows (BatchNorm: channel c
// of every image; GroupNorm: the C / G channels of one group of one image); the Python side sums
// the per-row results of a group with small Jittor ops (R values), so these kernels never see the
// grouping. Every pass reads each row once, front to back:
//
//   row_sum(x)                   s[r]  = sum_s x[r, s]
//   row_sq_dev(x, m)             q[r]  = sum_s (x[r, s] - m[r])^2        (two-pass variance)
//   row_affine(x, a, c)          y[r,s] = x[r, s] * a[r] + c[r]           (normalise and affine)
//   row_grad_sums(dy, x, m)      g[0, r] = sum_s dy[r, s],
//                                g[1, r] = sum_s dy[r, s] * (x[r, s] - m[r])
//   row_grad_input(dy, x, a, b, c)  dx[r, s] = dy[r, s] * a[r] + x[r, s] * b[r] + c[r]
//
// Sums are accumulated per row in the input type by vectorised partial sums (Jittor compiles
// with -Ofast, which lets g++ reassociate them), then added into a double per row, in blocks of
// ROW_BLOCK elements so that the float partial sums never span more than ROW_BLOCK values.
// OpenMP splits the rows statically when a call touches more than PAR_MIN elements; a row is
// always summed by one thread in one order, so results do not depend on the thread count.
#include <omp.h>

namespace jseg_norm {
typedef long long idx_t;
// Elements from which OpenMP splits the rows: on a quiet machine with 2 threads OffSeg-T's
// backbone training pass (batch 2, 512x512) took 1.1-1.2 s with 2^22 and 1.0 s with 2^18.
constexpr idx_t PAR_MIN = 1 << 18;
constexpr idx_t ROW_BLOCK = 4096;

template <class T>
inline double block_sum(const T* __restrict__ x, idx_t n) {
    double total = 0;
    for (idx_t k0 = 0; k0 < n; k0 += ROW_BLOCK) {
        const idx_t k1 = k0 + ROW_BLOCK < n ? k0 + ROW_BLOCK : n;
        T acc = 0;
        for (idx_t k = k0; k < k1; k++) acc += x[k];
        total += acc;
    }
    return total;
}

template <class T>
void row_sum(const T* __restrict__ x, T* __restrict__ s, idx_t rows, idx_t n) {
    #pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (idx_t r = 0; r < rows; r++) s[r] = T(block_sum(x + r * n, n));
}

template <class T>
void row_sq_dev(const T* __restrict__ x, const T* __restrict__ m, T* __restrict__ q, idx_t rows, idx_t n) {
    #pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (idx_t r = 0; r < rows; r++) {
        const T* xr = x + r * n;
        const T mr = m[r];
        double total = 0;
        for (idx_t k0 = 0; k0 < n; k0 += ROW_BLOCK) {
            const idx_t k1 = k0 + ROW_BLOCK < n ? k0 + ROW_BLOCK : n;
            T acc = 0;
            for (idx_t k = k0; k < k1; k++) {
                const T d = xr[k] - mr;
                acc += d * d;
            }
            total += acc;
        }
        q[r] = T(total);
    }
}

template <class T>
void row_affine(const T* __restrict__ x, const T* __restrict__ a, const T* __restrict__ c, T* __restrict__ y,
                idx_t rows, idx_t n) {
    #pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (idx_t r = 0; r < rows; r++) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        const T ar = a[r], cr = c[r];
        for (idx_t k = 0; k < n; k++) yr[k] = xr[k] * ar + cr;
    }
}

template <class T>
void row_grad_sums(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ m, T* __restrict__ g,
                   idx_t rows, idx_t n) {
    #pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (idx_t r = 0; r < rows; r++) {
        const T* dyr = dy + r * n;
        const T* xr = x + r * n;
        const T mr = m[r];
        double sum_dy = 0, sum_dy_dev = 0;
        for (idx_t k0 = 0; k0 < n; k0 += ROW_BLOCK) {
            const idx_t k1 = k0 + ROW_BLOCK < n ? k0 + ROW_BLOCK : n;
            T acc_dy = 0, acc_dev = 0;
            for (idx_t k = k0; k < k1; k++) {
                acc_dy += dyr[k];
                acc_dev += dyr[k] * (xr[k] - mr);
            }
            sum_dy += acc_dy;
            sum_dy_dev += acc_dev;
        }
        g[r] = T(sum_dy);
        g[rows + r] = T(sum_dy_dev);
    }
}

template <class T>
void row_grad_input(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ a,
                    const T* __restrict__ b, const T* __restrict__ c, T* __restrict__ dx, idx_t rows, idx_t n) {
    #pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (idx_t r = 0; r < rows; r++) {
        const T* dyr = dy + r * n;
        const T* xr = x + r * n;
        T* dxr = dx + r * n;
        const T ar = a[r], br = b[r], cr = c[r];
        for (idx_t k = 0; k < n; k++) dxr[k] = dyr[k] * ar + xr[k] * br + cr;
    }
}
}  // namespace jseg_norm
