"""argmax over one dimension, as ``jt.argmax``, with a JIT CPU operator.

``argmax(x, dim)`` returns ``(index, value)``: the int32 index of the
maximum over ``dim`` and its value, ``dim`` removed. Semantics are Jittor's:
the first index wins ties, and an element replaces the running maximum only
when it is strictly greater (a NaN never does; a NaN in the first position
stays unless a later element compares greater, which none does).

Jittor's own CPU reduction walks the reduced dimension with a stride for
every output element; segmentation calls it on (K, H, W) logits over the
class dimension (K = 150 planes of 512x512 after the final resize), where the
operator here streams the K planes past a running maximum of a chunk of
positions (``jseg/ops/csrc/argmax_cpu.cc``). Under CUDA, with fused operators
switched off, or for other dtypes, :func:`argmax` is ``jt.argmax``.
There is no gradient (the result is an index).
"""
import jittor as jt

from .csrc_bundle import bundle_source
from .dim_view import outer_n_inner
from .fused_kernel import fused_ops_enabled

__all__ = ['argmax']

_DTYPES = ('float32', 'float64')


def argmax(x, dim):
    """(index int32, value) of the maximum of ``x`` over ``dim``; shapes are ``x``'s without ``dim``."""
    ndim = x.ndim
    if not -ndim <= dim < ndim:
        raise ValueError(f'argmax: dim {dim} out of range for a {ndim}-D input')
    dim %= ndim
    if jt.flags.use_cuda or not fused_ops_enabled() or str(x.dtype) not in _DTYPES or x.shape[dim] == 0:
        return jt.argmax(x, dim)
    shape = tuple(x.shape)
    outer, _, inner = outer_n_inner(shape, dim)
    out_shape = shape[:dim] + shape[dim + 1:]
    flat = x.reshape((outer, shape[dim], inner))
    index, value = jt.code(
        [(outer, inner), (outer, inner)], [jt.int32, x.dtype], [flat],
        cpu_header=bundle_source('argmax_cpu.cc'),
        cpu_src='jseg_argmax::argmax<in0_type>(in0_p, out0_p, out1_p, in0_shape0, in0_shape1, in0_shape2);')
    return index.reshape(out_shape or (1,)), value.reshape(out_shape or (1,))
