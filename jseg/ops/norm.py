"""Batch normalisation (training mode) and group normalisation: JIT-compiled CPU operators.

Semantics: those of PyTorch's ``F.batch_norm(training=True)`` and ``F.group_norm``
on a (B, C, *) input, with the variance computed in two passes (mean of squared
deviations, biased), as PyTorch does::

    y = (x - mean) / sqrt(var + eps) * weight + bias

BatchNorm's statistics are per channel over the batch and the spatial
positions; GroupNorm's per image and group of C / G channels. With ``sync``
(SyncBN under MPI) the batch statistics are averaged over the ranks, and so are
the two per-channel sums of the backward pass, which is the gradient of the
sum of the ranks' losses, as PyTorch's SyncBatchNorm computes it (every rank
holds the same number of elements).

Why an operator: Jittor fuses an elementwise composition into the operators
around it. In training, the backward of the composition became fused
reductions that recompute the normalisation of every element inside the
per-channel sums, and the forward's normalise-and-affine was recomputed in
each consumer; on OffSeg-T's backbone (about 60 BatchNorms) and decode head
(GroupNorms after 1x1 convolutions) those kernels dominated the profile. Here
each pass is a ``jt.code`` operator (``jseg/ops/csrc/norm_cpu.cc``) that reads
its input once and writes a plain tensor:

* forward: per-row sums, per-row sums of squared deviations from the group
  mean, then ``y = x * a + c`` per row (a row is one channel of one image);
* backward: per-row ``sum dy`` and ``sum dy * (x - mean)``, then
  ``dx = dy * a + x * b + c`` per row.

The per-group reductions of the per-row values and the small per-row
coefficients are ordinary Jittor ops on (B, C) arrays.

:func:`batch_norm_train` and :func:`group_norm` are the entry points. They run
the operators on the CPU for float32/float64 inputs while
:func:`jseg.ops.fused_ops_enabled` is true, and otherwise (CUDA, fused
operators off, other dtypes) the compositions :func:`batch_norm_train_reference`
and :func:`group_norm_reference`, which stay the tested ground truth.
"""
import jittor as jt

from .csrc_bundle import bundle_source

__all__ = ['batch_norm_train', 'batch_norm_train_reference', 'group_norm', 'group_norm_reference']

_SOURCE = 'norm_cpu.cc'
_ROWS = 'in0_shape0, in0_shape1'


def _code(shape, dtype, inputs, src):
    return jt.code(shape, dtype, inputs, cpu_header=bundle_source(_SOURCE), cpu_src=src)


def _row_sum(x):
    """x (R, S) -> (R,) sums."""
    return _code((x.shape[0],), x.dtype, [x], f'jseg_norm::row_sum<in0_type>(in0_p, out0_p, {_ROWS});')


def _row_sq_dev(x, m):
    """x (R, S), m (R,) -> (R,) sums of (x - m)^2."""
    return _code((x.shape[0],), x.dtype, [x, m], f'jseg_norm::row_sq_dev<in0_type>(in0_p, in1_p, out0_p, {_ROWS});')


def _row_affine(x, a, c):
    """x (R, S), a and c (R,) -> x * a + c."""
    return _code(x.shape, x.dtype, [x, a, c], f'jseg_norm::row_affine<in0_type>(in0_p, in1_p, in2_p, out0_p, {_ROWS});')


def _row_grad_sums(dy, x, m):
    """dy and x (R, S), m (R,) -> (2, R): sum dy, sum dy * (x - m)."""
    return _code((2, x.shape[0]), x.dtype, [x, dy, m],
                 f'jseg_norm::row_grad_sums<in0_type>(in1_p, in0_p, in2_p, out0_p, {_ROWS});')


def _row_grad_input(dy, x, a, b, c):
    """dy and x (R, S), a, b, c (R,) -> dy * a + x * b + c."""
    return _code(x.shape, x.dtype, [x, dy, a, b, c],
                 f'jseg_norm::row_grad_input<in0_type>(in1_p, in0_p, in2_p, in3_p, in4_p, out0_p, {_ROWS});')


def _param(p, c, dtype, fill):
    return jt.full((c,), fill, dtype) if p is None else p.cast(dtype)


# ---------------------------------------------------------------------------------------------
# BatchNorm, training mode
# ---------------------------------------------------------------------------------------------

def batch_norm_train_reference(x, weight, bias, eps=1e-5, sync=False):
    """The composition: batch statistics of x (B, C, *) and the normalised output.

    Returns:
        tuple: ``(y, mean, var)``: y like x; mean and (biased) var (C,), averaged
        over the MPI ranks when ``sync`` and running under MPI.
    """
    dims = [0] + list(range(2, x.ndim))
    shape = [1, -1] + [1] * (x.ndim - 2)
    mean = x.mean(dims=dims)
    if sync and jt.in_mpi:
        mean = mean.mpi_all_reduce('mean')
    centered = x - mean.reshape(shape)
    var = (centered * centered).mean(dims=dims)
    if sync and jt.in_mpi:
        var = var.mpi_all_reduce('mean')
    out = centered / jt.sqrt(var + eps).reshape(shape)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out, mean, var


def _all_mean(v, sync):
    return v.mpi_all_reduce('mean') if sync and jt.in_mpi else v


class _BatchNormFunction(jt.Function):
    """execute(x (B, C, S), mean (C,), rstd (C,), weight (C,), bias (C,)) -> y (B, C, S).

    mean and rstd are the (constant) batch statistics; ``grad`` is the full
    gradient through them (and None for mean and rstd).
    """

    def __init__(self, sync):
        self.sync = sync

    def execute(self, x, mean, rstd, weight, bias):
        b, c, _ = x.shape
        a = weight * rstd
        shift = bias - mean * a
        self.saved = (x, mean, rstd, weight)
        return _row_affine(x.reshape(b * c, -1), a.broadcast((b, c)).reshape(-1),
                           shift.broadcast((b, c)).reshape(-1)).reshape(x.shape)

    def grad(self, dy):
        x, mean, rstd, weight = self.saved
        b, c, s = x.shape
        rows = x.reshape(b * c, s)
        dy = dy.cast(x.dtype).reshape(b * c, s)
        sums = _row_grad_sums(dy, rows, mean.broadcast((b, c)).reshape(-1)).reshape(2, b, c).sum(1)  # (2, C)
        grad_bias, grad_weight = sums[0], sums[1] * rstd
        mean_dy = _all_mean(sums[0] / (b * s), self.sync)
        mean_dy_dev = _all_mean(sums[1] / (b * s), self.sync)
        a = weight * rstd
        coef_x = -a * rstd * rstd * mean_dy_dev
        const = -a * mean_dy - mean * coef_x
        dx = _row_grad_input(dy, rows, a.broadcast((b, c)).reshape(-1), coef_x.broadcast((b, c)).reshape(-1),
                             const.broadcast((b, c)).reshape(-1))
        return dx.reshape(x.shape), None, None, grad_weight, grad_bias


def batch_norm_train(x, weight, bias, eps=1e-5, sync=False):
    """Training-mode batch normalisation of x (B, C, *); see the module docstring.

    Args:
        x (jt.Var): (B, C, *).
        weight, bias (jt.Var | None): (C,) affine parameters, or None.
        eps (float): added to the variance.
        sync (bool): average the statistics over the MPI ranks (SyncBN).

    Returns:
        tuple: ``(y, mean, var)``: y like x; the batch mean and biased variance
        (C,), without gradient history for the operator (use them for the
        running statistics).
    """
    if not _kernel_applies(x):
        return batch_norm_train_reference(x, weight, bias, eps, sync)
    b, c = x.shape[:2]
    x3 = x.reshape(b, c, -1)
    rows = x3.reshape(b * c, -1)
    count = rows.shape[1] * b
    with jt.no_grad():
        mean = _all_mean(_row_sum(rows.detach()).reshape(b, c).sum(0) / count, sync)
        var = _row_sq_dev(rows.detach(), mean.broadcast((b, c)).reshape(-1)).reshape(b, c).sum(0) / count
        var = _all_mean(var, sync)
        rstd = 1.0 / jt.sqrt(var + eps)
    y = _BatchNormFunction(sync)(x3, mean, rstd, _param(weight, c, x.dtype, 1.0), _param(bias, c, x.dtype, 0.0))
    return y.reshape(x.shape), mean, var


# ---------------------------------------------------------------------------------------------
# GroupNorm
# ---------------------------------------------------------------------------------------------

def group_norm_reference(x, num_groups, weight, bias, eps=1e-5):
    """The composition: GroupNorm of x (B, C, *) over groups of C // num_groups channels."""
    b = x.shape[0]
    grouped = x.reshape(b, num_groups, -1)
    mean = grouped.mean(dim=2, keepdims=True)
    centered = grouped - mean
    var = (centered * centered).mean(dim=2, keepdims=True)
    out = (centered / jt.sqrt(var + eps)).reshape(x.shape)
    shape = [1, -1] + [1] * (x.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


class _GroupNormFunction(jt.Function):
    """execute(x (B, C, S), mean (B, G), rstd (B, G), weight (C,), bias (C,)) -> y (B, C, S)."""

    def execute(self, x, mean, rstd, weight, bias):
        b, c, _ = x.shape
        g = mean.shape[1]
        a = (weight.reshape(1, g, -1) * rstd.reshape(b, g, 1))                        # (B, G, C/G)
        shift = bias.reshape(1, g, -1) - mean.reshape(b, g, 1) * a
        self.saved = (x, mean, rstd, weight)
        return _row_affine(x.reshape(b * c, -1), a.reshape(-1), shift.reshape(-1)).reshape(x.shape)

    def grad(self, dy):
        x, mean, rstd, weight = self.saved
        b, c, s = x.shape
        g = mean.shape[1]
        rows = x.reshape(b * c, s)
        dy = dy.cast(x.dtype).reshape(b * c, s)
        mean_rows = mean.reshape(b, g, 1).broadcast((b, g, c // g))
        sums = _row_grad_sums(dy, rows, mean_rows.reshape(-1)).reshape(2, b, g, c // g)
        r = rstd.reshape(b, g, 1)
        grad_bias = sums[0].sum(0).reshape(-1)
        grad_weight = (sums[1] * r).sum(0).reshape(-1)
        w = weight.reshape(1, g, -1)
        count = (c // g) * s
        p = (sums[0] * w).sum(2, keepdims=True) / count                               # mean of dy * w
        q = (sums[1] * w).sum(2, keepdims=True) * r / count                           # mean of dy * w * xhat
        a = w * r                                                                      # (B, G, C/G)
        coef_x = (-r * r * q).broadcast((b, g, c // g))
        const = -r * p - mean.reshape(b, g, 1) * coef_x
        dx = _row_grad_input(dy, rows, a.reshape(-1), coef_x.reshape(-1), const.broadcast((b, g, c // g)).reshape(-1))
        return dx.reshape(x.shape), None, None, grad_weight, grad_bias


def group_norm(x, num_groups, weight, bias, eps=1e-5):
    """GroupNorm of x (B, C, *); see the module docstring.

    Args:
        x (jt.Var): (B, C, *), C divisible by ``num_groups``.
        num_groups (int): G.
        weight, bias (jt.Var | None): (C,) affine parameters, or None.
        eps (float): added to the variance.

    Returns:
        jt.Var: like x.
    """
    if not _kernel_applies(x):
        return group_norm_reference(x, num_groups, weight, bias, eps)
    b, c = x.shape[:2]
    rows = x.reshape(b * c, -1)
    count = rows.shape[1] * (c // num_groups)
    with jt.no_grad():
        mean = _row_sum(rows.detach()).reshape(b, num_groups, -1).sum(2) / count         # (B, G)
        mean_rows = mean.reshape(b, num_groups, 1).broadcast((b, num_groups, c // num_groups)).reshape(-1)
        var = _row_sq_dev(rows.detach(), mean_rows).reshape(b, num_groups, -1).sum(2) / count
        rstd = 1.0 / jt.sqrt(var + eps)
    y = _GroupNormFunction()(x.reshape(b, c, -1), mean, rstd, _param(weight, c, x.dtype, 1.0),
                             _param(bias, c, x.dtype, 0.0))
    return y.reshape(x.shape)


def _kernel_applies(x):
    from .fused_kernel import fused_ops_enabled   # fused_kernel imports the op modules: import late
    return (fused_ops_enabled() and not jt.flags.use_cuda and x.dtype in (jt.float32, jt.float64)
            and x.ndim >= 2 and x.numel() > 0)
