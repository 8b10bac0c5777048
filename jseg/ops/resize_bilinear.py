"""Bilinear resize of NCHW tensors as a JIT-compiled CPU operator, forward and backward.

Semantics are those of ``torch.nn.functional.interpolate(x, size, mode='bilinear')``
and of Jittor's ``nn.interpolate`` (the two agree): for an input (B, C, h, w)
and an output size (H, W), each axis maps output index ``d`` to a source
coordinate

* ``align_corners=False``: ``src = max((d + 0.5) * in / out - 0.5, 0)``;
* ``align_corners=True``: ``src = d * (in - 1) / (out - 1)`` (0 when ``out == 1``);

with taps ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)`` and weights
``1 - (src - i0)``, ``src - i0``; the output is the product of the two axes'
blends. The scale is always ``in / out`` of the sizes actually used: callers
that start from a scale factor (``jseg.models.utils.resize``) turn it into a
size first, as they did before this operator existed.

:func:`resize_bilinear` is the public entry point. It runs the JIT operator
(:class:`ResizeBilinearFunction`) for 4-D float32/float64 inputs on the CPU
while the fused operators are enabled (:mod:`jseg.ops.fused_kernel`);
otherwise (``jt.flags.use_cuda``, ``JSEG_FUSED_OPS=0``, other dtypes) it calls
:func:`resize_bilinear_reference`, Jittor's ``nn.interpolate``.

How the CPU kernels work (``jseg/ops/csrc/resize_bilinear_cpu.cc``)
---------------------------------------------------------------------
Both kernels first tabulate, once per call, the (index, weight) pairs of the
two taps of every output row and every output column. The B*C planes are
independent; the parallel loop (OpenMP, one thread below ``PAR_MIN_WORK``
output elements) runs over (plane, block of 64 rows) tasks.

* forward: an output row is ``w0 * r(i0) + w1 * r(i1)``, where ``r(y)`` is
  source row ``y`` interpolated along x (a short gather of ``W`` values). A
  task keeps the last two interpolated rows, so each source row it needs is
  interpolated once, and the blend, which writes the whole output, is a
  contiguous, vectorised loop.
* backward (the transpose, as a gather so that no two threads write the same
  memory and no atomics are needed): for each source row ``y``, the rows of the
  output gradient that read it (a contiguous range, from the tap tables in
  compressed-row form) are summed with their y weights into a row of length
  ``W`` (contiguous, vectorised), which is then gathered along x into the
  ``w`` values of the input-gradient row.

Every output element is computed by one thread in a fixed order, so results
do not depend on the thread count. Against Jittor's ``nn.interpolate`` the
results differ only by float rounding (Jittor blends along y first, this
kernel along x first, as PyTorch's CPU kernel does). Speed against
``nn.interpolate``: ``python tools/benchmark_ops.py --op resize``.
"""
import jittor as jt
from jittor import nn

from .csrc_bundle import bundle_source
from .fused_kernel import fused_ops_enabled

__all__ = ['resize_bilinear', 'resize_bilinear_reference', 'resize_bilinear_fused', 'ResizeBilinearFunction']

SUPPORTED_DTYPES = ('float32', 'float64')

# (P, h, w) planes -> (P, H, W); the last argument is align_corners, a data constant (no recompile).
_FORWARD_SRC = ('jseg_resize::forward<in0_type>(in0_p, out0_p, in0_shape0 * in0_shape1, in0_shape2, in0_shape3, '
                'out0_shape2, out0_shape3, data["align_corners"] != 0);')
_BACKWARD_SRC = ('jseg_resize::backward<in0_type>(in0_p, out0_p, out0_shape0 * out0_shape1, out0_shape2, '
                 'out0_shape3, in0_shape2, in0_shape3, data["align_corners"] != 0);')


def _code(shape, dtype, source, x, align_corners):
    return jt.code(shape, dtype, [x], cpu_header=bundle_source('resize_bilinear_cpu.cc'), cpu_src=source,
                   data={'align_corners': int(align_corners)})


class ResizeBilinearFunction(jt.Function):
    """Bilinear resize as ``jt.code`` CPU operators (see the module docstring).

    ``execute(x, size, align_corners)``: x (B, C, h, w) float32/float64, size
    (H, W) -> (B, C, H, W). ``grad`` returns the gradient for x.
    """

    def execute(self, x, size, align_corners):
        b, c, h, w = x.shape
        self.input_shape, self.dtype, self.align_corners = (b, c, h, w), x.dtype, bool(align_corners)
        return _code((b, c, int(size[0]), int(size[1])), x.dtype, _FORWARD_SRC, x, self.align_corners)

    def grad(self, dout):
        if dout is None:
            return None
        dout = dout.cast(self.dtype)
        return _code(self.input_shape, self.dtype, _BACKWARD_SRC, dout, self.align_corners)


def _check_size(x, size):
    if x.ndim != 4:
        raise ValueError(f'resize_bilinear expects a 4-D (B, C, H, W) input, got shape {tuple(x.shape)}')
    if len(size) != 2:
        raise ValueError(f'resize_bilinear: size must be (H, W), got {size!r}')
    out_h, out_w = (int(s) for s in size)
    if min(x.shape[2], x.shape[3], out_h, out_w) <= 0:
        raise ValueError(f'resize_bilinear: sizes must be positive, got input {tuple(x.shape)} and output '
                         f'{(out_h, out_w)}')
    return out_h, out_w


def resize_bilinear_fused(x, size, align_corners=False):
    """The JIT operator (CPU); same arguments and result as :func:`resize_bilinear`.

    Args:
        x (jt.Var): (B, C, h, w), float32 or float64.
        size (tuple[int, int]): (H, W), both positive.
        align_corners (bool): PyTorch's ``align_corners``.

    Returns:
        jt.Var: (B, C, H, W), the dtype of ``x``.
    """
    size = _check_size(x, size)
    if str(x.dtype) not in SUPPORTED_DTYPES:
        raise ValueError(f'resize_bilinear_fused supports {SUPPORTED_DTYPES}, got {x.dtype}')
    return ResizeBilinearFunction.apply(x, size, bool(align_corners))


def resize_bilinear_reference(x, size, align_corners=False):
    """Jittor's own bilinear ``nn.interpolate`` (the composition the operator replaces)."""
    return nn.interpolate(x, size=tuple(int(s) for s in size), mode='bilinear', align_corners=bool(align_corners))


def use_kernel(x):
    """Whether :func:`resize_bilinear` runs the JIT operator for ``x`` (see the module docstring)."""
    return (bool(fused_ops_enabled()) and not jt.flags.use_cuda and x.ndim == 4
            and str(x.dtype) in SUPPORTED_DTYPES)


def resize_bilinear(x, size, align_corners=False):
    """Bilinear resize of ``x`` (B, C, h, w) to ``size`` (H, W) -> (B, C, H, W).

    PyTorch's ``F.interpolate(x, size, mode='bilinear', align_corners=...)``
    semantics; the JIT operator where it applies (:func:`use_kernel`), else
    Jittor's ``nn.interpolate``.
    """
    if use_kernel(x):
        return resize_bilinear_fused(x, size, align_corners)
    return resize_bilinear_reference(x, size, align_corners)
