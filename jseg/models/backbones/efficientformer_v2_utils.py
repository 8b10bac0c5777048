"""Numerical helpers of the EfficientFormerV2 backbone, with PyTorch's exact semantics.

* :func:`relative_offset_index`: the official numbering of relative token
  offsets that indexes the attention-bias tables;
* :func:`gather_attention_bias`: bias table -> (heads, Nq, Nk) attention bias,
  bicubically resized in token-index space as ``F.interpolate(..., mode='bicubic')``;
* :func:`upsample2x_bilinear`: ``nn.Upsample(scale_factor=2, mode='bilinear')``;
* :func:`batched_matmul` and :class:`PointwiseConv`: per-head products and 1x1
  convolutions as matrix products: jseg's packed GEMM operator
  (:func:`jseg.ops.gemm.gemm`) on the CPU while the fused operators are on,
  else one 2-D ``jt.matmul`` (Jittor's GEMM) per product.

Interpolation is written as separable gathers with precomputed taps, so it is
differentiable and exact (float32 weights computed as PyTorch computes them).
"""
from functools import lru_cache

import jittor as jt
import numpy as np
from jittor import nn

from jseg.ops.gemm import gemm, gemm_applies

__all__ = ['PointwiseConv', 'batched_matmul', 'gather_attention_bias', 'relative_offset_index',
           'upsample2x_bilinear']


# PointwiseConv uses the packed GEMM operator from this many input and output channels on.
GEMM_MIN_CHANNELS = 16
# batched_matmul keeps jt.matmul for gradient-free products of at most this many columns.
GEMM_NARROW_COLS = 64


class PointwiseConv(nn.Conv2d):
    """1x1 convolution computed as one matrix product: (B, Cin, H, W) -> (B, Cout, H, W).

    Same parameters as ``nn.Conv2d(in_channels, out_channels, 1)``. On the CPU,
    Jittor's GEMM is about twice as fast as its oneDNN convolution here,
    forward and backward; the packed GEMM operator (when it applies) computes
    Y[b] = W X[b] per image without permuting the input, its weight gradient
    summed over the batch inside the kernel. Not for fewer than
    ``GEMM_MIN_CHANNELS`` input or output channels (the attention's talking
    heads, 8 -> 8): there the product is memory-bound and the operator's
    forward+backward was slower than ``jt.matmul``'s (4.3 ms against 3.3 ms,
    one thread, ``tools/benchmark_ops.py --op gemm``).
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, 1)

    def execute(self, x):
        b, c, h, w = x.shape
        weight = self.weight.reshape(self.out_channels, c)
        if gemm_applies(x) and min(c, self.out_channels) >= GEMM_MIN_CHANNELS:
            y = gemm(weight, x.reshape(b, c, h * w))                             # (B, Cout, HW)
        elif b == 1:
            y = jt.matmul(weight, x.reshape(c, h * w))                         # (Cout, HW)
        else:
            y = jt.matmul(weight, x.permute(1, 0, 2, 3).reshape(c, b * h * w))  # (Cout, B*HW)
            y = y.reshape(self.out_channels, b, h, w).permute(1, 0, 2, 3)
        return y.reshape(b, self.out_channels, h, w) + self.bias.reshape(1, -1, 1, 1)


def _products(a, b, trans_a=False, trans_b=False):
    """(..., n, k) @ (..., k, m) as one 2-D GEMM per leading index (operands optionally transposed)."""
    lead = tuple(a.shape[:-2])
    a = a.reshape((-1,) + tuple(a.shape[-2:]))
    b = b.reshape((-1,) + tuple(b.shape[-2:]))
    prods = []
    for i in range(a.shape[0]):
        left, right = a[i], b[i]
        prods.append(jt.matmul(left.transpose() if trans_a else left,
                               right.transpose() if trans_b else right))
    if len(prods) == 1:
        return prods[0].reshape(lead + tuple(prods[0].shape))
    return jt.stack(prods).reshape(lead + tuple(prods[0].shape))


class _BatchedMatmul(jt.Function):
    def execute(self, a, b):
        self.a, self.b = a, b
        return _products(a, b)

    def grad(self, grad_out):
        return _products(grad_out, self.b, trans_b=True), _products(self.a, grad_out, trans_a=True)


def batched_matmul(a, b):
    """(B, h, n, k) @ (B, h, k, m) -> (B, h, n, m) as B*h 2-D GEMMs, forward and backward.

    Jittor runs a 4-D ``jt.matmul`` as a broadcast-multiply-reduce on the CPU;
    2-D products go to oneDNN's GEMM and are several times faster here. The
    custom gradient keeps the backward pass on GEMMs as well (differentiating
    through the per-head slices would add a full-size scatter per slice).
    Where the packed GEMM operator applies, one batched call of it instead,
    except for a narrow product (m <= ``GEMM_NARROW_COLS``) that needs no
    gradient: the attention's ``attn @ v`` in inference, where Jittor's
    forward was 2-6% faster (with a gradient the operator's forward+backward
    was 2.2-3.2x faster; ``tools/benchmark_ops.py --op gemm``, one AVX2 core).
    """
    no_grad = jt.flags.no_grad or (a.is_stop_grad() and b.is_stop_grad())
    if gemm_applies(a) and b.dtype == a.dtype and not (no_grad and b.shape[-1] <= GEMM_NARROW_COLS):
        lead = tuple(a.shape[:-2])
        prod = gemm(a.reshape((-1,) + tuple(a.shape[-2:])), b.reshape((-1,) + tuple(b.shape[-2:])))
        return prod.reshape(lead + tuple(prod.shape[-2:]))
    return _BatchedMatmul.apply(a, b)


def relative_offset_index(query_res, key_res, step):
    """Bias-table index of every (query, key) token pair, as the official code numbers them.

    Query tokens sit on a ``query_res`` x ``query_res`` grid scaled by ``step``,
    key tokens on a ``key_res`` x ``key_res`` grid (both row-major). Each
    distinct absolute offset (|dy|, |dx|) gets the next id in order of first
    appearance when pairs are visited query-major.

    Returns:
        tuple[np.ndarray, int]: int64 (query_res**2, key_res**2) indices and
        the number of distinct offsets.
    """
    qy, qx = np.divmod(np.arange(query_res * query_res), query_res)
    ky, kx = np.divmod(np.arange(key_res * key_res), key_res)
    dy = np.abs(qy[:, None] * step - ky[None, :])
    dx = np.abs(qx[:, None] * step - kx[None, :])
    codes = (dy * (dx.max() + 1) + dx).ravel()
    uniq, first = np.unique(codes, return_index=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind='stable')] = np.arange(len(uniq))
    index = rank[np.searchsorted(uniq, codes)].reshape(len(qy), len(ky))
    return index, len(uniq)


@lru_cache(maxsize=64)
def _cubic_taps(in_size, out_size):
    """PyTorch's bicubic sampling (a=-0.75, align_corners=False, clamped borders) along one axis.

    Returns:
        tuple[np.ndarray, np.ndarray]: int32 (out_size, 4) source indices and
        float32 (out_size, 4) weights, computed in float32 as PyTorch does.
    """
    a = np.float32(-0.75)
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(src)
    t = src - base

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    one = np.float32(1)
    weights = np.stack([far(t + one), near(t), near(one - t), far(2 * one - t)], axis=1)
    index = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3), 0, in_size - 1)
    return index.astype(np.int32), weights.astype(np.float32)


@lru_cache(maxsize=64)
def _linear_taps(in_size, out_size):
    """PyTorch's bilinear sampling (align_corners=False) along one axis: (out, 2) indices, weights."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    low = np.floor(src).astype(np.int64)
    frac = src - low
    index = np.stack([low, np.minimum(low + 1, in_size - 1)], axis=1)
    weights = np.stack([1 - frac, frac], axis=1)
    return index.astype(np.int32), weights.astype(np.float32)


def _resize_axis(x, taps, axis):
    """Interpolate ``x`` along ``axis`` with per-output source ``taps = (index, weights)``.

    index/weights: (out, T) NumPy arrays; every output is ``sum_t w[o, t] * x[..., index[o, t], ...]``.
    """
    index, weights = taps
    out_size, num_taps = index.shape
    shape = list(x.shape)
    shape[axis] = out_size
    shape.append(num_taps)
    tap_dim = len(shape) - 1
    exprs = [f'i{d}' for d in range(x.ndim)]
    exprs[axis] = f'@e0(i{axis},i{tap_dim})'
    gathered = x.reindex(shape, exprs, extras=[jt.array(index)])               # (..., out, ..., T)
    bcast = [d for d in range(len(shape)) if d not in (axis, tap_dim)]
    return (gathered * jt.array(weights).broadcast(shape, bcast)).sum(tap_dim)


def upsample2x_bilinear(x):
    """``nn.Upsample(scale_factor=2, mode='bilinear')`` (align_corners=False): (B, C, H, W) -> (B, C, 2H, 2W)."""
    h, w = x.shape[-2:]
    x = _resize_axis(x, _linear_taps(h, 2 * h), x.ndim - 2)
    return _resize_axis(x, _linear_taps(w, 2 * w), x.ndim - 1)


def gather_attention_bias(table, index, size):
    """Attention bias (heads, Nq, Nk) from a (heads, offsets) table and (N1, N2) int index.

    Equals ``F.interpolate(table[:, index][None], size, mode='bicubic')[0]``;
    the resize is skipped along axes whose size already matches.
    """
    heads = table.shape[0]
    n1, n2 = index.shape
    bias = table.reindex([heads, n1, n2], ['i0', '@e0(i1,i2)'], extras=[index])  # (heads, N1, N2)
    if size[0] != n1:
        bias = _resize_axis(bias, _cubic_taps(n1, size[0]), 1)
    if size[1] != n2:
        bias = _resize_axis(bias, _cubic_taps(n2, size[1]), 2)
    return bias
