"""Softmax over one dimension: a JIT-compiled CPU operator, forward and backward.

Semantics: those of ``jittor.nn.softmax(x, dim)`` (and of PyTorch's
``torch.softmax``), numerically stable::

    y = exp(x - max_dim x) / sum_dim exp(x - max_dim x)

With a ``weight`` w (one value per position along ``dim``, or a single value
for all), the weighted softmax that FreqFusion's kernel normaliser computes
as softmax, multiply by the window, renormalise::

    y = w * exp(x - max) / sum_dim (w * exp(x - max))  ==  softmax(x + log w)

The weight is a constant: no gradient flows into it. A slice along ``dim``
whose maximum is not finite (all ``-inf``, e.g. a fully masked attention row,
or containing ``+inf``/NaN) is NaN, as with the composition.

:func:`softmax` is the public entry point. It runs the ``jt.code`` operator
(:func:`softmax_fused`) on the CPU for float32 and float64 inputs while
:func:`jseg.ops.fused_ops_enabled` is true, and otherwise (``jt.flags.use_cuda``,
fused operators switched off, other dtypes, ``dim=None``) falls back to
:func:`softmax_reference`: ``jittor.nn.softmax``, followed for a weight by
the multiply and renormalisation of the original FreqFusion code.

Kernels (``jseg/ops/csrc/softmax_cpu.cc``)
------------------------------------------
The input is viewed as a contiguous (outer, n, inner) array, n the size of
``dim``, so one compiled operator per dtype serves every rank and dim:

* last dimension (inner == 1), e.g. attention over keys: per row, a max pass,
  one pass computing ``e = exp(x - max)`` (times the weight) into the output
  while summing it, and a scaling pass by ``1 / sum`` over the row, which is
  in L1/L2 by then; every loop runs over the contiguous row;
* a middle dimension (inner > 1), e.g. softmax over the k*k taps of a
  (B, G, k*k, H, W) mask: blocks of 128 contiguous columns of one (n, inner)
  slab; the same three passes, each looping over the n rows and, innermost,
  over the block's columns, with the per-column max and sum in small arrays;
  the 2 * n block rows of input and output stay in L1;
* backward, ``dx = y * (dy - sum_dim(dy * y))`` (the same with or without a
  weight): a dot-product pass and a write pass, organised the same way.

The exponential is a branch-free polynomial (Cephes' expf, about 1 ulp), so
that g++ vectorises every loop at the width of the machine (Jittor compiles
with ``-march=native``: AVX2 or AVX-512) without depending on a vector math
library; float64 uses ``std::exp``. OpenMP splits rows (or column blocks)
statically for calls above 2^22 elements (``PAR_MIN_WORK``): smaller calls take
a few ms at most on one thread, less than a parallel region can wait for a
second core on a busy machine. No two threads write the same element, so the
results do not depend on the thread count.
"""
import jittor as jt
from jittor import nn

from .csrc_bundle import bundle_source
from .dim_view import outer_n_inner

__all__ = ['softmax', 'softmax_reference', 'softmax_fused', 'SoftmaxFunction']

_SOURCE = 'softmax_cpu.cc'
_DIMS = 'in0_shape0, in0_shape1, in0_shape2'
FORWARD_SRC = f'jseg_softmax::forward<in0_type>(in0_p, out0_p, {_DIMS});'
FORWARD_WEIGHTED_SRC = f'jseg_softmax::forward_weighted<in0_type>(in0_p, in1_p, in1_shape0, out0_p, {_DIMS});'
BACKWARD_SRC = f'jseg_softmax::backward<in0_type>(in0_p, in1_p, out0_p, {_DIMS});'


def _dim_index(x, dim):
    """``dim`` as an index in [0, x.ndim), with a clear error otherwise."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f'softmax: dim must be an int, got {dim!r}')
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f'softmax: dim {dim} is out of range for a tensor of shape {tuple(x.shape)}')
    return dim % x.ndim


def _check_weight(x, dim, weight):
    """The weight as a flat, gradient-free Var of length n (the size of ``dim``) or 1."""
    n = x.shape[dim]
    weight = weight.reshape(-1).stop_grad()
    if weight.shape[0] not in (1, n):
        raise ValueError(f'softmax: weight has {weight.shape[0]} values; expected 1 or {n} (the size of dim '
                         f'{dim} of a tensor of shape {tuple(x.shape)})')
    return weight


def softmax_reference(x, dim, weight=None):
    """The composition: ``jittor.nn.softmax(x, dim)``, then for a weight the multiply and renormalisation.

    Args:
        x (jt.Var): any shape.
        dim (int): the dimension to normalise.
        weight (jt.Var | None): n values (n = ``x.shape[dim]``) or one; a constant.

    Returns:
        jt.Var: same shape (and dtype) as ``x``.
    """
    if weight is None:
        return nn.softmax(x, dim)
    d = _dim_index(x, dim)
    weight = _check_weight(x, d, weight)
    probs = nn.softmax(x, d)
    probs = probs * weight.reshape([1] * d + [-1] + [1] * (x.ndim - d - 1))
    return probs / probs.sum(d, keepdims=True)


class SoftmaxFunction(jt.Function):
    """The operator on a contiguous (outer, n, inner) view; see the module docstring.

    ``execute(x, weight=None)``: x (outer, n, inner) float32/float64, weight
    (n,) or (1,) of the same dtype, a constant -> y like x. ``grad`` returns
    dx (outer, n, inner), computed from the saved y (and None for the weight).
    """

    def execute(self, x, weight=None):
        if weight is None:
            y = jt.code(x.shape, x.dtype, [x], cpu_header=bundle_source(_SOURCE), cpu_src=FORWARD_SRC)
        else:
            y = jt.code(x.shape, x.dtype, [x, weight], cpu_header=bundle_source(_SOURCE),
                        cpu_src=FORWARD_WEIGHTED_SRC)
        self.y, self.weighted = y, weight is not None
        return y

    def grad(self, dy):
        y = self.y
        dx = None if dy is None else jt.code(y.shape, y.dtype, [y, dy.cast(y.dtype)],
                                             cpu_header=bundle_source(_SOURCE), cpu_src=BACKWARD_SRC)
        return (dx, None) if self.weighted else dx


def softmax_fused(x, dim, weight=None):
    """Softmax through the JIT-compiled CPU operator; same arguments and result as :func:`softmax_reference`.

    Args:
        x (jt.Var): any shape, float32 or float64, at least one element.
        dim (int): the dimension to normalise (negative counts from the end).
        weight (jt.Var | None): n values or one, cast to x's dtype; a constant.

    Returns:
        jt.Var: same shape and dtype as ``x``.
    """
    if x.dtype not in (jt.float32, jt.float64):
        raise TypeError(f'softmax_fused: float32 or float64 input expected, got {x.dtype}')
    d = _dim_index(x, dim)
    shape = tuple(x.shape)
    if any(s == 0 for s in shape):
        raise ValueError(f'softmax_fused: empty tensor of shape {shape}')
    outer, _, inner = outer_n_inner(shape, d)
    x3 = x.reshape(outer, shape[d], inner)
    if weight is None:
        y = SoftmaxFunction.apply(x3)
    else:
        y = SoftmaxFunction.apply(x3, _check_weight(x, d, weight).cast(x.dtype))
    return y.reshape(shape)


def _kernel_applies(x, dim):
    from .fused_kernel import fused_ops_enabled   # fused_kernel imports the op modules: import late
    return (fused_ops_enabled() and not jt.flags.use_cuda and isinstance(dim, int) and not isinstance(dim, bool)
            and x.dtype in (jt.float32, jt.float64) and x.ndim > 0 and x.numel() > 0)


def softmax(x, dim, weight=None):
    """Softmax of ``x`` over ``dim`` (optionally weighted); see the module docstring.

    Uses the JIT-compiled CPU operator when it applies (CPU, fused operators
    on, float32/float64, an int ``dim``), else :func:`softmax_reference`
    (``jittor.nn.softmax``, which also takes ``dim=None`` or a tuple).

    Args:
        x (jt.Var): any shape.
        dim (int): the dimension to normalise (negative counts from the end).
        weight (jt.Var | None): n = ``x.shape[dim]`` values, or one, multiplying
            the exponentials before the normalisation; a constant.

    Returns:
        jt.Var: same shape and dtype as ``x``.
    """
    if _kernel_applies(x, dim):
        return softmax_fused(x, dim, weight)
    return softmax_reference(x, dim, weight)
