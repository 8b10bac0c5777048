"""Bilinear grid sampling (``grid_sample``) as JIT-compiled CPU operators, forward and backward.

:func:`grid_sample` has the signature and the semantics of PyTorch's and
Jittor's ``grid_sample`` for 4-D inputs. For input ``x`` (N, C, Hi, Wi) and
grid (N, Ho, Wo, 2) holding normalised (x, y) coordinates in [-1, 1]::

    ix = ((gx + 1) / 2) * (Wi - 1)        align_corners=True
    ix = ((gx + 1) * Wi - 1) / 2          align_corners=False   (iy likewise with Hi)
    'border': ix clamped to [0, Wi - 1]   (the gradient w.r.t. the grid is 0 where
                                           ix <= 0 or ix >= Wi - 1, as PyTorch's)
    out[n, c, h, w] = sum over the 4 corners (x0 = floor(ix), x0 + 1) x (y0, y0 + 1)
                      of x[n, c, y, x] * (1 - |ix - x|) * (1 - |iy - y|),
                      corners outside the map reading 0

(PyTorch's ``aten/src/ATen/native/GridSampler.h``, which Jittor's
``nn.grid_sample`` follows too). The gradients w.r.t. the input and the grid
are PyTorch's: the transpose of the sampling, and the corner values times the
derivatives of the bilinear weights, times the unnormalisation factor
((Wi - 1) / 2 or Wi / 2) and the border clamp's 0/1 derivative.

Dispatch
--------
The JIT operators run for mode ``'bilinear'``, padding ``'zeros'`` or
``'border'``, 4-D float32/float64 inputs on the CPU when the fused operators
are enabled (:func:`jseg.ops.fused_ops_enabled`). Everything else (CUDA,
``'nearest'``, ``'reflection'``, 5-D, other dtypes, the switch off) calls
Jittor's ``nn.grid_sample``, as before this operator existed.

CPU kernels (``jseg/ops/csrc/grid_sample_cpu.cc``)
--------------------------------------------------
The Ho*Wo output pixels of an image are one flat list, handled in blocks of
1024 pixels. For a block, tap tables are computed once: per pixel one plane
offset and two x and two y weights. The bilinear taps of each axis are
stored as a pair that always lies inside the map (a tap outside it moved
into the pair with weight 0), so every pixel reads the 2x2 neighbourhood
``offset + {0, 1, Wi, Wi + 1}`` without bounds checks or branches. Then:

* forward, parallel over (image, pixel block): for each pair of channels,
  one pass over the block's tables writes two contiguous output rows;
* gradient w.r.t. the input, parallel over (image, 8 channels): each task
  zeroes and owns its 8 input-gradient planes and scatters ``weight * dout``
  into them block by block (tables recomputed per task), so no two threads
  write the same memory and the result does not depend on the thread count;
* gradient w.r.t. the grid, parallel over (image, pixel block): the block's
  x and y gradients accumulate over the channels (two per pass), with the
  weights' derivatives (the unnormalisation factor and the border clamp's
  0/1 folded in) from the tables.

Processing blocks of pixels per channel (rather than all channels of one
pixel, whose planes lie a power of two apart) was 4-7x faster; the tap
loops are kept scalar (vectorised, g++ turns them into gathers, 2x slower on
AVX2). No explicit vector width is assumed. Calls of under 2^21 taps run on
one thread (a parallel region can wait a whole scheduler time slice for a
second core on a busy machine). Each (padding, align_corners, dtype) triple
compiles once; the sizes are runtime values. The backward is two ``jt.code``
operators, so Jittor computes only the gradient that is used (the grid of
``point_sample`` has none).

Non-finite values: a tap outside the map is read from a pixel inside it with
weight 0, so an inf/NaN next to the border can turn such a sample into NaN
where PyTorch gives a finite value; finite inputs are exact.

Speed against ``nn.grid_sample``: ``python tools/benchmark_ops.py --op grid_sample``
(the FreqFusion samplers of OffSeg-T at 512x512).
"""
import jittor as jt
from jittor import nn

from .csrc_bundle import bundle_source

__all__ = ['grid_sample', 'grid_sample_fused', 'GridSampleFunction', 'FUSED_PADDING_MODES']

FUSED_PADDING_MODES = {'zeros': 0, 'border': 1}
_INT32_MAX = 2 ** 31 - 1


def _source(op, padding_mode, align_corners):
    """``cpu_src`` of operator ``op`` ('forward', 'grad_input', 'grad_grid').

    Input order: forward (input, grid); grad_input (dout, grid, input: shape only);
    grad_grid (dout, input, grid). ``X`` gives (N, C, Hi, Wi), ``G`` (N, Ho, Wo, 2).
    """
    x, g, args = {'forward': (0, 1, 'in0_p, in1_p, out0_p'),
                  'grad_input': (2, 1, 'in0_p, in1_p, out0_p'),
                  'grad_grid': (1, 2, 'in0_p, in1_p, in2_p, out0_p')}[op]
    pad, ac = FUSED_PADDING_MODES[padding_mode], 'true' if align_corners else 'false'
    dims = ', '.join([f'in{x}_shape{d}' for d in range(4)] + [f'in{g}_shape1', f'in{g}_shape2'])
    return f'jseg_grid_sample::{op}<in0_type, {pad}, {ac}>({args}, {dims});'


def _op(op, shape, dtype, inputs, padding_mode, align_corners):
    return jt.code(shape, dtype, inputs, cpu_header=bundle_source('grid_sample_cpu.cc'),
                   cpu_src=_source(op, padding_mode, align_corners))


class GridSampleFunction(jt.Function):
    """Bilinear ``grid_sample`` forward/backward as ``jt.code`` CPU operators.

    ``execute(input, grid, padding_mode, align_corners)``: input (N, C, Hi, Wi),
    grid (N, Ho, Wo, 2) of the same float dtype -> (N, C, Ho, Wo). ``grad``
    returns the gradients for input (N, C, Hi, Wi) and grid (N, Ho, Wo, 2).
    """

    def execute(self, input, grid, padding_mode='zeros', align_corners=False):
        n, c = input.shape[:2]
        self.input, self.grid = input, grid
        self.padding_mode, self.align_corners = padding_mode, bool(align_corners)
        return _op('forward', (n, c, grid.shape[1], grid.shape[2]), input.dtype, [input, grid],
                   padding_mode, self.align_corners)

    def grad(self, dout):
        if dout is None:
            return None, None
        input, grid = self.input, self.grid
        dout = dout.cast(input.dtype)
        d_input = _op('grad_input', input.shape, input.dtype, [dout, grid, input], self.padding_mode,
                      self.align_corners)
        d_grid = _op('grad_grid', grid.shape, grid.dtype, [dout, input, grid], self.padding_mode,
                     self.align_corners)
        return d_input, d_grid


def _check(input, grid):
    if input.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2:
        raise ValueError(f'grid_sample expects input (N, C, H, W) and grid (N, Ho, Wo, 2), '
                         f'got {tuple(input.shape)} and {tuple(grid.shape)}')
    if grid.shape[0] != input.shape[0]:
        raise ValueError(f'grid_sample: input batch {input.shape[0]} and grid batch {grid.shape[0]} differ')
    if min(input.shape) < 1:
        raise ValueError(f'grid_sample: empty input {tuple(input.shape)}')


def grid_sample_fused(input, grid, padding_mode='zeros', align_corners=False):
    """Bilinear grid sampling through the JIT operators (CPU), whatever the switch says.

    Args:
        input (jt.Var): (N, C, Hi, Wi), float32 or float64.
        grid (jt.Var): (N, Ho, Wo, 2), (x, y) in [-1, 1]; cast to the input's dtype.
        padding_mode (str): 'zeros' or 'border'.
        align_corners (bool): as in PyTorch.

    Returns:
        jt.Var: (N, C, Ho, Wo).
    """
    _check(input, grid)
    if padding_mode not in FUSED_PADDING_MODES:
        raise ValueError(f'grid_sample_fused: padding_mode must be one of {sorted(FUSED_PADDING_MODES)}, '
                         f'got {padding_mode!r}')
    if input.dtype not in (jt.float32, jt.float64):
        raise ValueError(f'grid_sample_fused: input must be float32 or float64, got {input.dtype}')
    if input.shape[2] * input.shape[3] > _INT32_MAX:
        raise ValueError(f'grid_sample_fused: input planes of {input.shape[2]}x{input.shape[3]} pixels '
                         f'exceed 32-bit offsets')
    if grid.dtype != input.dtype:
        grid = grid.cast(input.dtype)
    return GridSampleFunction.apply(input, grid, padding_mode, bool(align_corners))


def _use_fused(input, grid, mode, padding_mode):
    from .fused_kernel import fused_ops_enabled
    return (fused_ops_enabled() and not jt.flags.use_cuda and mode == 'bilinear'
            and padding_mode in FUSED_PADDING_MODES and input.ndim == 4 and grid.ndim == 4
            and input.dtype in (jt.float32, jt.float64) and grid.dtype == input.dtype
            and min(input.shape) > 0 and min(grid.shape) > 0 and input.shape[2] * input.shape[3] <= _INT32_MAX)


def grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False):
    """``grid_sample`` with PyTorch's semantics (see the module docstring).

    Args:
        input (jt.Var): (N, C, Hi, Wi) (or 5-D, handled by Jittor).
        grid (jt.Var): (N, Ho, Wo, 2), same dtype as ``input``.
        mode (str): 'bilinear' or 'nearest'.
        padding_mode (str): 'zeros', 'border' or 'reflection'.
        align_corners (bool): as in PyTorch.

    Returns:
        jt.Var: (N, C, Ho, Wo).
    """
    if _use_fused(input, grid, mode, padding_mode):
        return grid_sample_fused(input, grid, padding_mode, align_corners)
    return nn.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
