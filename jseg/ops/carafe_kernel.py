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
  row accumulate the k*k taps (row-major tap order, the order of the
  reference) in register tiles of output pixels (32 floats with AVX2 and
  AVX-512, 16 otherwise; ``CARAFE_TILE_VECTORS`` in
  ``jseg/ops/csrc/cpu_simd.h``): a tile's sums stay in registers over all
  taps, so each multiply-add loads only its mask and feature values. The mask rows of the current output rows
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

Sources
-------
``jseg/ops/csrc/``: ``carafe.h`` (the per-element functions),
``cpu_simd.h`` (the vector width and tile size),
``carafe_cpu.cc`` (the blocked and elementwise CPU operators) and
``carafe_cuda.cu`` (the CUDA kernels and their launchers). The ``jt.code``
sources below are one call each, into those functions.

Speed and memory against the pure-Jittor composition: run
``python tools/benchmark_ops.py`` (OffSeg-T's FreqFusion shapes).
"""
import jittor as jt

from .csrc_bundle import bundle_source

__all__ = ['carafe_fused']

IMPLS = ('blocked', 'elementwise')

# The inputs of each operator: which one gives (B, C, h, w) and which one the masks' channel
# count (G*k*k); the other arguments are (in0_p, in1_p, out0_p). See carafe_cpu.cc.
#   forward:       in0 features (B, C, h, w), in1 masks;          out0 (B, C, H, W)
#   grad_features: in0 dout, in1 masks, in2 features (shape only); out0 d features
#   grad_masks:    in0 dout, in1 features, in2 masks (shape only); out0 d masks
_OPERANDS = {'forward': (0, 1), 'grad_features': (2, 1), 'grad_masks': (1, 2)}


def _call(function, op, k, s):
    """The jt.code source of one operator: a call of ``jseg_carafe::<function>``."""
    shape, masks = _OPERANDS[op]
    dims = ', '.join(f'in{shape}_shape{d}' for d in range(4))
    return (f'jseg_carafe::{function}<in0_type, {k}, {s}>(in0_p, in1_p, out0_p, {dims}, '
            f'in{masks}_shape1 / {k * k});')


def cpu_source(op, k, s, impl='blocked'):
    """``cpu_src`` of operator ``op`` ('forward', 'grad_features', 'grad_masks')."""
    return _call(f'{op}_{impl}', op, k, s)


def cuda_source(op, k, s):
    """``cuda_src`` of operator ``op``."""
    return _call(f'{op}_cuda', op, k, s)


def _op(op, shape, dtype, inputs, k, s, impl):
    return jt.code(shape, dtype, inputs,
                   cpu_header=bundle_source('carafe_cpu.cc'), cpu_src=cpu_source(op, k, s, impl),
                   cuda_header=bundle_source('carafe_cuda.cu'), cuda_src=cuda_source(op, k, s))


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
        return _op('forward', (b, c, h * s, w * s), features.dtype, [features, masks], k, s, impl)

    def grad(self, dout):
        features, masks, k, s = self.features, self.masks, self.k, self.s
        if dout is None:
            return None, None
        dout = dout.cast(features.dtype)
        d_features = _op('grad_features', features.shape, features.dtype, [dout, masks, features], k, s, self.impl)
        d_masks = _op('grad_masks', masks.shape, masks.dtype, [dout, features, masks], k, s, self.impl)
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
    if impl not in IMPLS:
        raise ValueError(f'carafe: unknown impl {impl!r}')
    if features.dtype not in (jt.float32, jt.float64):
        features = features.float32()
    if masks.dtype != features.dtype:
        masks = masks.cast(features.dtype)
    return CarafeFunction.apply(features, masks, k, g, s, impl)
