"""CARAFE as JIT-compiled Jittor operators (``jt.code``), forward and backward.

Same semantics and arguments as :func:`jseg.ops.carafe.carafe_reference`
(mmcv's ``carafe``): for features ``f`` (B, C, h, w), masks ``m``
(B, G*k*k, H, W) with ``H = h*s``, ``W = w*s``, ``r = (k-1)//2`` and channel
group ``g(c) = c // (C // G)``::

    out[b, c, Y, X] = sum_{i, j < k} m[b, g(c)*k*k + i*k + j, Y, X]
                                     * f[b, c, Y//s + i - r, X//s + j - r]

with zero padding. :func:`carafe_fused` is the entry point; it is a
``jt.Function`` whose forward and two gradients (features, masks) are each
one ``jt.code`` operator with a ``cpu_src`` and a ``cuda_src``. Each
(kernel size, scale) pair is baked into the source as compile-time constants,
so Jittor compiles one kernel per pair and dtype on first use and caches it
(float32 and float64 are supported).

CPU kernels (the path CPU users run)
------------------------------------
All three kernels are parallelised with OpenMP over ``(b, y)``, one *source*
row of the low-resolution features at a time; that source row owns the
``s`` output rows ``Y = y*s + py``. Inside, the channel loop is outermost
and every innermost loop runs over a full contiguous output row ``X`` (unit
stride in the output, the mask row and a staging row), so it vectorises
without gathers. The trick that removes the ``X // s`` gather: for each of
the k source rows a channel needs, the row is *expanded* once into a
zero-padded staging row ``u[t] = f[sy, t//s - r]`` of length ``s*(w + 2r)``;
tap ``(i, j)`` then reads ``u_i[X + j*s]``, a contiguous slice. The expansion
costs ``O(k*s*w)`` per (row, channel) against ``O(k*k*s*s*w)`` multiply-adds.

* forward: for each channel, build the k staging rows, then for each output
  row accumulate the k*k taps into the output row (row-major tap order, the
  order of the reference). The mask rows of the current output rows
  (``s * k*k * W`` values) are shared by all channels of the group and stay
  in L1/L2 while the channel loop runs.
* grad wrt features (adjoint of the above, a gather, no atomics): for source
  row ``y`` and channel ``c``, every output row ``Y = (y - i + r)*s + py`` that
  reads it adds ``m * dout`` into a staging row ``U[X + j*s]``; the staging
  row is then folded back, ``df[y, x] = sum_px U[(x + r)*s + px]``.
* grad wrt masks: for output rows ``Y = y*s + py`` the mask-gradient rows
  (``s * G*k*k * W`` values, all owned by this task) accumulate
  ``dout[c, Y, X] * u_i[X + j*s]`` over the group's channels; they are zeroed
  first (Jittor does not zero outputs).

No thread writes a location another thread writes, so no atomics or
reductions between threads are needed, and the results do not depend on the
thread count. Calls below ``PAR_MIN_WORK`` (2^25) multiply-adds, a few
milliseconds on one core, run on one thread: a parallel region costs little
on an idle machine but can wait a whole scheduler time slice for a second
core on a busy one, which dominated such calls in the benchmark.

CUDA kernels
------------
One thread per output element of each kernel (forward: output pixel; grad
features: feature pixel, gathering from the output pixels that read it; grad
masks: mask element, summing over the channels of its group), written as
``__host__ __device__`` element functions in a header shared by the CUDA
source and by a CPU "elementwise" variant (``impl='elementwise'``), which the
tests run so the CUDA kernels' arithmetic is checked on CPU. The CUDA launch
code itself is only exercised on a machine with a GPU.

Speed and memory against the pure-Jittor composition: run
``python tools/benchmark_ops.py`` (OffSeg-T's FreqFusion shapes).
"""
import jittor as jt

__all__ = ['carafe_fused']

# Element functions shared by the CUDA kernels and the CPU 'elementwise'
# variant. KS: kernel size, SC: scale factor (compile-time constants).
_ELEMENT_HEADER = r'''
#ifndef JSEG_CARAFE_ELEMENT_H
#define JSEG_CARAFE_ELEMENT_H
#ifdef __CUDACC__
#define JSEG_HD __host__ __device__ __forceinline__
#else
#define JSEG_HD inline
#endif
namespace jseg_carafe {
typedef long long idx_t;

// out[b, c, Y, X]
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

// d loss / d m[b, g*k*k + tap, Y, X]: sum over the channels of group g.
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
}  // namespace jseg_carafe
#endif
'''

_CPU_HEADER = _ELEMENT_HEADER + r'''
#include <vector>
#include <cstring>
namespace jseg_carafe {
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
}  // namespace jseg_carafe
'''

_CUDA_HEADER = _ELEMENT_HEADER + r'''
namespace jseg_carafe {
template <class T, int KS, int SC>
__global__ void fwd_kernel(const T* __restrict__ f, const T* __restrict__ m, T* __restrict__ out,
                           idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t H = h * SC, W = w * SC, total = B * C * H * W;
    for (idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; n < total;
         n += (idx_t)gridDim.x * blockDim.x) {
        const idx_t X = n % W, Y = (n / W) % H, c = (n / (W * H)) % C, b = n / (W * H * C);
        out[n] = fwd_at<T, KS, SC>(f, m, b, c, Y, X, C, h, w, G);
    }
}
template <class T, int KS, int SC>
__global__ void dfeat_kernel(const T* __restrict__ dout, const T* __restrict__ m, T* __restrict__ df,
                             idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t total = B * C * h * w;
    for (idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; n < total;
         n += (idx_t)gridDim.x * blockDim.x) {
        const idx_t x = n % w, y = (n / w) % h, c = (n / (w * h)) % C, b = n / (w * h * C);
        df[n] = dfeat_at<T, KS, SC>(dout, m, b, c, y, x, C, h, w, G);
    }
}
template <class T, int KS, int SC>
__global__ void dmask_kernel(const T* __restrict__ dout, const T* __restrict__ f, T* __restrict__ dm,
                             idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t H = h * SC, W = w * SC, total = B * G * KS * KS * H * W;
    for (idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; n < total;
         n += (idx_t)gridDim.x * blockDim.x) {
        const idx_t X = n % W, Y = (n / W) % H, ch = (n / (W * H)) % (G * KS * KS), b = n / (W * H * G * KS * KS);
        dm[n] = dmask_at<T, KS, SC>(dout, f, b, ch / (KS * KS), (int)(ch % (KS * KS)), Y, X, C, h, w, G);
    }
}
inline int grid_for(long long total) {
    long long blocks = (total + 255) / 256;
    return (int)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}
}  // namespace jseg_carafe
'''

# Shape names shared by every source: in0 = features or dout, see each op.
_PRELUDE = '''
typedef in0_type T;
constexpr int KS = {k}, SC = {s}, R = (KS - 1) / 2, KK = KS * KS;
constexpr long long PAR_MIN_WORK = 1 << 25;   // multiply-adds (a few ms on one core) below which one thread does it all
(void)R; (void)KK; (void)PAR_MIN_WORK;
'''


def _cpu_forward_src(k, s):
    # in0: features (B, C, h, w); in1: masks (B, G*k*k, H, W); out0: (B, C, H, W)
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in0_shape0, C = in0_shape1, h = in0_shape2, w = in0_shape3;
const idx_t G = in1_shape1 / KK, cpg = C / G, H = h * SC, W = w * SC;
const idx_t UW = SC * (w + 2 * R);
const T* __restrict__ fbase = in0_p;
const T* __restrict__ mbase = in1_p;
T* __restrict__ obase = out0_p;
#pragma omp parallel if (B * C * H * W * KK > PAR_MIN_WORK)
{
    std::vector<T> ubuf(KS * UW);
    #pragma omp for schedule(static)
    for (idx_t by = 0; by < B * h; by++) {
        const idx_t b = by / h, y = by % h;
        for (idx_t c = 0; c < C; c++) {
            const idx_t g = c / cpg;
            const T* frows = fbase + (b * C + c) * h * w;
            bool valid[KS];
            for (int i = 0; i < KS; i++) {
                const idx_t sy = y + i - R;
                valid[i] = sy >= 0 && sy < h;
                if (valid[i]) expand_row<T, KS, SC>(frows + sy * w, ubuf.data() + i * UW, w);
            }
            for (int py = 0; py < SC; py++) {
                const idx_t Y = y * SC + py;
                T* __restrict__ o = obase + ((b * C + c) * H + Y) * W;
                for (idx_t X = 0; X < W; X++) o[X] = T(0);
                const T* mrow = mbase + ((b * G + g) * KK * H + Y) * W;
                for (int i = 0; i < KS; i++) {
                    if (!valid[i]) continue;
                    for (int j = 0; j < KS; j++) {
                        const T* __restrict__ mt = mrow + (idx_t)(i * KS + j) * H * W;
                        const T* __restrict__ u = ubuf.data() + i * UW + j * SC;
                        for (idx_t X = 0; X < W; X++) o[X] += mt[X] * u[X];
                    }
                }
            }
        }
    }
}
'''


def _cpu_grad_features_src(k, s):
    # in0: dout (B, C, H, W); in1: masks (B, G*k*k, H, W); in2: features (B, C, h, w) (shape only)
    # out0: d features (B, C, h, w)
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in2_shape0, C = in2_shape1, h = in2_shape2, w = in2_shape3;
const idx_t G = in1_shape1 / KK, cpg = C / G, H = h * SC, W = w * SC;
const idx_t UW = SC * (w + 2 * R);
const T* __restrict__ dbase = in0_p;
const T* __restrict__ mbase = in1_p;
T* __restrict__ dfbase = out0_p;
#pragma omp parallel if (B * C * H * W * KK > PAR_MIN_WORK)
{
    std::vector<T> ubuf(UW);
    #pragma omp for schedule(static)
    for (idx_t by = 0; by < B * h; by++) {
        const idx_t b = by / h, y = by % h;
        for (idx_t c = 0; c < C; c++) {
            const idx_t g = c / cpg;
            T* __restrict__ U = ubuf.data();
            for (idx_t t = 0; t < UW; t++) U[t] = T(0);
            for (int i = 0; i < KS; i++) {
                const idx_t yy = y - i + R;
                if (yy < 0 || yy >= h) continue;
                for (int py = 0; py < SC; py++) {
                    const idx_t Y = yy * SC + py;
                    const T* __restrict__ d = dbase + ((b * C + c) * H + Y) * W;
                    const T* mrow = mbase + ((b * G + g) * KK * H + Y) * W;
                    for (int j = 0; j < KS; j++) {
                        const T* __restrict__ mt = mrow + (idx_t)(i * KS + j) * H * W;
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
'''


def _cpu_grad_masks_src(k, s):
    # in0: dout (B, C, H, W); in1: features (B, C, h, w); in2: masks (shape only)
    # out0: d masks (B, G*k*k, H, W)
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in1_shape0, C = in1_shape1, h = in1_shape2, w = in1_shape3;
const idx_t G = in2_shape1 / KK, cpg = C / G, H = h * SC, W = w * SC;
const idx_t UW = SC * (w + 2 * R);
const T* __restrict__ dbase = in0_p;
const T* __restrict__ fbase = in1_p;
T* __restrict__ dmbase = out0_p;
#pragma omp parallel if (B * C * H * W * KK > PAR_MIN_WORK)
{
    std::vector<T> ubuf(KS * UW);
    #pragma omp for schedule(static)
    for (idx_t by = 0; by < B * h; by++) {
        const idx_t b = by / h, y = by % h;
        for (idx_t ch = 0; ch < G * KK; ch++)
            for (int py = 0; py < SC; py++) {
                T* __restrict__ r0 = dmbase + ((b * G * KK + ch) * H + y * SC + py) * W;
                for (idx_t X = 0; X < W; X++) r0[X] = T(0);
            }
        for (idx_t c = 0; c < C; c++) {
            const idx_t g = c / cpg;
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
                T* dmrow = dmbase + ((b * G + g) * KK * H + Y) * W;
                for (int i = 0; i < KS; i++) {
                    if (!valid[i]) continue;
                    for (int j = 0; j < KS; j++) {
                        T* __restrict__ dm = dmrow + (idx_t)(i * KS + j) * H * W;
                        const T* __restrict__ u = ubuf.data() + i * UW + j * SC;
                        for (idx_t X = 0; X < W; X++) dm[X] += d[X] * u[X];
                    }
                }
            }
        }
    }
}
'''


# CPU sources that call the same element functions as the CUDA kernels.
def _cpu_elementwise_forward_src(k, s):
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in0_shape0, C = in0_shape1, h = in0_shape2, w = in0_shape3;
const idx_t G = in1_shape1 / KK, H = h * SC, W = w * SC, total = B * C * H * W;
#pragma omp parallel for schedule(static) if (total * KK > PAR_MIN_WORK)
for (idx_t n = 0; n < total; n++) {
    const idx_t X = n % W, Y = (n / W) % H, c = (n / (W * H)) % C, b = n / (W * H * C);
    out0_p[n] = fwd_at<T, KS, SC>(in0_p, in1_p, b, c, Y, X, C, h, w, G);
}
'''


def _cpu_elementwise_grad_features_src(k, s):
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in2_shape0, C = in2_shape1, h = in2_shape2, w = in2_shape3;
const idx_t G = in1_shape1 / KK, total = B * C * h * w;
#pragma omp parallel for schedule(static) if (total * KK > PAR_MIN_WORK)
for (idx_t n = 0; n < total; n++) {
    const idx_t x = n % w, y = (n / w) % h, c = (n / (w * h)) % C, b = n / (w * h * C);
    out0_p[n] = dfeat_at<T, KS, SC>(in0_p, in1_p, b, c, y, x, C, h, w, G);
}
'''


def _cpu_elementwise_grad_masks_src(k, s):
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in1_shape0, C = in1_shape1, h = in1_shape2, w = in1_shape3;
const idx_t G = in2_shape1 / KK, H = h * SC, W = w * SC, total = B * G * KK * H * W;
#pragma omp parallel for schedule(static) if (total * KK > PAR_MIN_WORK)
for (idx_t n = 0; n < total; n++) {
    const idx_t X = n % W, Y = (n / W) % H, ch = (n / (W * H)) % (G * KK), b = n / (W * H * G * KK);
    out0_p[n] = dmask_at<T, KS, SC>(in0_p, in1_p, b, ch / KK, (int)(ch % KK), Y, X, C, h, w, G);
}
'''


def _cuda_forward_src(k, s):
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in0_shape0, C = in0_shape1, h = in0_shape2, w = in0_shape3, G = in1_shape1 / KK;
fwd_kernel<T, KS, SC><<<grid_for(B * C * h * SC * w * SC), 256>>>(in0_p, in1_p, out0_p, B, C, h, w, G);
'''


def _cuda_grad_features_src(k, s):
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in2_shape0, C = in2_shape1, h = in2_shape2, w = in2_shape3, G = in1_shape1 / KK;
dfeat_kernel<T, KS, SC><<<grid_for(B * C * h * w), 256>>>(in0_p, in1_p, out0_p, B, C, h, w, G);
'''


def _cuda_grad_masks_src(k, s):
    return _PRELUDE.format(k=k, s=s) + r'''
using namespace jseg_carafe;
const idx_t B = in1_shape0, C = in1_shape1, h = in1_shape2, w = in1_shape3, G = in2_shape1 / KK;
dmask_kernel<T, KS, SC><<<grid_for(B * G * KK * h * SC * w * SC), 256>>>(in0_p, in1_p, out0_p, B, C, h, w, G);
'''


_CPU_SOURCES = {
    'blocked': (_cpu_forward_src, _cpu_grad_features_src, _cpu_grad_masks_src),
    'elementwise': (_cpu_elementwise_forward_src, _cpu_elementwise_grad_features_src,
                    _cpu_elementwise_grad_masks_src),
}


def _op(shape, dtype, inputs, cpu_src, cuda_src):
    return jt.code(shape, dtype, inputs, cpu_header=_CPU_HEADER, cpu_src=cpu_src,
                   cuda_header=_CUDA_HEADER, cuda_src=cuda_src)


class CarafeFunction(jt.Function):
    """CARAFE forward/backward as ``jt.code`` operators (see the module docstring).

    ``execute(features, masks, kernel_size, group_size, scale_factor, impl)``
    returns (B, C, h*s, w*s); ``grad`` returns the gradients for features
    (B, C, h, w) and masks (B, G*k*k, h*s, w*s). Only the two inputs are kept
    for backward.
    """

    def execute(self, features, masks, kernel_size, group_size, scale_factor, impl='blocked'):
        b, c, h, w = features.shape
        k, s = kernel_size, scale_factor
        self.features, self.masks = features, masks
        self.k, self.s, self.impl = k, s, impl
        fwd = _CPU_SOURCES[impl][0]
        return _op((b, c, h * s, w * s), features.dtype, [features, masks],
                   fwd(k, s), _cuda_forward_src(k, s))

    def grad(self, dout):
        features, masks, k, s = self.features, self.masks, self.k, self.s
        if dout is None:
            return None, None
        dout = dout.cast(features.dtype)
        _, grad_f_src, grad_m_src = _CPU_SOURCES[self.impl]
        d_features = _op(features.shape, features.dtype, [dout, masks, features],
                         grad_f_src(k, s), _cuda_grad_features_src(k, s))
        d_masks = _op(masks.shape, masks.dtype, [dout, features, masks],
                      grad_m_src(k, s), _cuda_grad_masks_src(k, s))
        return d_features, d_masks


def carafe_fused(features, masks, kernel_size, group_size, scale_factor, impl='blocked'):
    """CARAFE through the JIT-compiled operators; same arguments and result as
    :func:`jseg.ops.carafe.carafe_reference`.

    Args:
        features (jt.Var): (B, C, h, w), float32 or float64.
        masks (jt.Var): (B, G*k*k, h*s, w*s), same dtype.
        kernel_size (int): k, odd.
        group_size (int): G, dividing C.
        scale_factor (int): s >= 1.
        impl (str): CPU source variant: ``'blocked'`` (the fast row-blocked
            kernels, default) or ``'elementwise'`` (one element per loop
            iteration through the element functions the CUDA kernels use;
            for testing those on CPU). Ignored on CUDA.

    Returns:
        jt.Var: (B, C, h*s, w*s).
    """
    if features.ndim != 4 or masks.ndim != 4:
        raise ValueError(f'carafe expects 4-D features and masks, got {features.shape} and {masks.shape}')
    b, c, h, w = features.shape
    k, g, s = int(kernel_size), int(group_size), int(scale_factor)
    if k % 2 != 1 or k < 1:
        raise ValueError(f'carafe: kernel_size must be odd, got {k}')
    if s < 1:
        raise ValueError(f'carafe: scale_factor must be >= 1, got {s}')
    if g < 1 or c % g:
        raise ValueError(f'carafe: {c} channels do not split into {g} groups')
    expected = (b, g * k * k, h * s, w * s)
    if tuple(masks.shape) != expected:
        raise ValueError(f'carafe: masks must have shape {expected} for features {tuple(features.shape)}, '
                         f'got {tuple(masks.shape)}')
    if impl not in _CPU_SOURCES:
        raise ValueError(f'carafe: unknown impl {impl!r}')
    if features.dtype not in (jt.float32, jt.float64):
        features = features.float32()
    if masks.dtype != features.dtype:
        masks = masks.cast(features.dtype)
    return CarafeFunction.apply(features, masks, k, g, s, impl)
